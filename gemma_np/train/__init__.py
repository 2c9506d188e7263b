"""Training EmbeddingGemma: what turns the backwards of nn/ into learning.

    loss.py   MultipleNegativesRankingLoss (in-batch negatives, hard negatives, the symmetric form) and its
              gradient with respect to the embeddings, as sentence-transformers computes it
    optim.py  AdamW, as torch.optim.AdamW computes it (decoupled weight decay, bias correction, eps after it),
              the linear schedule with warm-up, clipping by global norm, the Trainer's no-decay names
    step.py   one step's gradients: the model forward with a cache, the loss, the backward; plain and cached
              (GradCache); which parameters train (parameters(), the frozen-table option)
    fit.py    the fine-tuning loop: (query, document) pairs to steps, as sentence-transformers' trainer runs
              CachedMultipleNegativesRankingLoss
    evaluate.py  accuracy, precision, recall, MRR, NDCG and MAP @k of a retrieval, as InformationRetrievalEvaluator
    data.py   a code-retrieval data set (docstring summary -> the function's code) built from the standard
              library's sources into the cache, split by package; load_train and load_ir read it

Imports: NumPy, the standard library and gemma_np.nn only; data.py the standard library alone. data.py is the
one module here that reads files (the standard library's sources, the data set it writes); like nn/, the others
read none: the caller hands them arrays (embeddings, gradients, parameters).
"""
