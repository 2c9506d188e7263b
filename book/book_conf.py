"""Sphinx configuration of the book: the executed notebooks as a static HTML site (python book/book_build.py).

book_build.py stages the sources (this folder's index.md, the executed notebooks, a page per source file they link
to) and runs Sphinx on them with this file, as their conf.py. Nothing is executed: myst-nb renders the outputs the executed copies
already hold. Everything the pages load is in the built folder (MathJax from the sphinx-mathjax-offline package),
so the book reads offline, from a file server or a folder.
"""

project = "gemma-np: EmbeddingGemma in plain NumPy, as a book"
author = "the gemma-np authors"
copyright = "the gemma-np authors"

extensions = ["myst_nb", "sphinx-mathjax-offline"]  # the second is a folder name with dashes
root_doc = "index"
exclude_patterns = ["_build"]

# The executed copies, as they are: never run a notebook here (tests/test_notebooks.py runs them).
nb_execution_mode = "off"
nb_merge_streams = True  # a cell's prints, one block
myst_enable_extensions = ["dollarmath", "amsmath"]

html_theme = "sphinx_book_theme"
html_title = "gemma-np: the book"
html_favicon = "favicon.svg"  # without an icon, a browser asks for /favicon.ico and logs the 404
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
}
html_context = {"default_mode": "light"}  # without it the theme logs a console error on a first visit
html_show_sourcelink = False
html_copy_source = False
html_last_updated_fmt = None
html_static_path = ["_static"]  # custom.css, staged by book_build.py
html_css_files = ["custom.css"]

# MathJax 3.2.2 from disk: sphinx-mathjax-offline copies its files into _static/mathjax and points mathjax_path at
# them, so the math renders with no network; myst-nb's MathJax 3 settings apply as they are.
