"""Training EmbeddingGemma: what turns the backwards of nn/ into learning.

    loss.py   MultipleNegativesRankingLoss (in-batch negatives, hard negatives, the symmetric form) and its
              gradient with respect to the embeddings, as sentence-transformers computes it
    optim.py  AdamW, as torch.optim.AdamW computes it (decoupled weight decay, bias correction, eps after it),
              the linear schedule with warm-up, clipping by global norm, the Trainer's no-decay names
    step.py   one step's gradients: the model's forward with a cache, the loss, the model's backward (both
              gemma_np.nn.sentence's); plain and cached (GradCache); which parameters train (parameters(), the
              frozen-table option)
    frozen.py the frozen layers' outputs computed once: each text's input of layer N, alone, kept in a memory-
              mapped store keyed by the weights' and the texts' hashes (what --layers-from N makes cheap)
    fit.py    the fine-tuning loop: (query, document[, negatives...]) rows to steps, as sentence-transformers'
              trainer runs (Cached)MultipleNegativesRankingLoss; mine() adds hard negatives to pairs; TrainConfig
              and MiningConfig, every training and mining default written once
    evaluate.py  accuracy, precision, recall, MRR, NDCG and MAP @k of a retrieval, as InformationRetrievalEvaluator
    mining.py hard negatives as sentence-transformers' mine_hard_negatives chooses them from the same embeddings
              (range_min/range_max, margins, max/min score, "top" or "random"), as triplets or n-tuples
    data.py   the code-retrieval data set's folder, prompts and loaders (load_train, load_ir); the set itself is
              built by a tool apart: python -m training_data_tools.code_retrieval build

Imports: NumPy, the standard library and gemma_np.nn only; data.py the standard library alone. Files: data.py's
two loaders read the .jsonl files of the data folder they are given, and frozen.py writes and reads the store's
folder it is given; nothing else here reads or writes a file: like nn/, the other modules are handed arrays
(embeddings, gradients, parameters) by the caller.
"""
