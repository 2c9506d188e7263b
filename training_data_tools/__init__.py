"""Tools that build the data sets gemma_np.train fine-tunes on; run as scripts, never imported by gemma_np.

    python -m training_data_tools.code_retrieval build    # the code-retrieval set, from the standard library

Imports: the standard library and gemma_np.train.data (the folder and format the loaders read) only.
"""
