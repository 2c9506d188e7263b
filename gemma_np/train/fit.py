"""Fine-tuning: the loop that turns (query, document[, negatives...]) rows into training steps, as
sentence-transformers' trainer runs (Cached)MultipleNegativesRankingLoss.

Each step, in the trainer's order:

    batch      = the next batch_size row indices of batch_order()          (a seeded permutation per epoch)
    ids        = prompt + text, tokenized (<bos> ... <eos>, at most max_seq_length tokens), one column per field
    loss, g    = cached_mnrl_gradients(model, [queries, documents, negatives...], mini_batch_size)   # train/step.py
                 (or mnrl_gradients with gradcache=False)
    norm       = clip_grad_norm(g, max_grad_norm)                                          # train/optim.py
    AdamW step at the scheduled rate; then the rate for the next step (linear, warm-up)

What the transformers Trainer does that is reproduced: AdamW over the trainable tensors with the norms
exempt from weight decay (trainer_no_decay), the linear schedule with warm-up (the first step at rate 0 when
there is warm-up), clipping by global norm before each step. What it is not: no mixed precision, no gradient
accumulation, no dropout (EmbeddingGemma has none). The batch order is gemma_np's own (NumPy's generator);
benchmarks/bench_fine_tuning.py hands the very same order to sentence-transformers' trainer to compare the two.

Hard negatives: mine() adds them to (query, document) pairs as sentence-transformers' mine_hard_negatives does
(gemma_np.train.mining, with MiningConfig's settings), each row then (query, document, negative_1, ...,
negative_k), the n-tuple format; the negatives are documents, embedded with the document prompt.

With layers_from N, pass a FrozenStore of layer N (gemma_np.train.frozen) holding the rows' tokenized texts
(training_texts()): each step then begins at layer N; without one, the frozen layers run at every step, on each
text alone, and give the same bits.

Nothing here reads a file (in train/, only data.py's two loaders and frozen.py's store do): `model` is an
EmbeddingGemma (or anything with its attributes), `evaluate` a callable given the model, and `progress` a
callable the CLI draws a bar with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from .data import DOCUMENT_PROMPT_NAME, QUERY_PROMPT_NAME
from .frozen import FrozenStore
from .mining import SAMPLING_STRATEGIES, mine_hard_negatives
from .optim import AdamW, clip_grad_norm, linear_schedule_lr, trainer_no_decay
from .step import cached_mnrl_gradients, mnrl_gradients, parameters


def setting(default, text: str):
    """A field of TrainConfig with its one-line description (the `gemma-np train` option's help)."""
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class TrainConfig:
    """The settings of one fine-tuning run; the defaults are the transformers Trainer's where it has one.

    Each field is an option of `gemma-np train` (steps -> --steps), its default and help taken from here."""

    steps: int = setting(100, "optimizer steps")
    batch_size: int = setting(32, "pairs per step: each query's in-batch negatives are the other pairs' documents")
    mini_batch_size: int = setting(8, "texts per forward pass in GradCache (the launch post's size)")
    gradcache: bool = setting(True, "GradCache (CachedMultipleNegativesRankingLoss), one mini-batch's activations "
                                    "at a time; --no-gradcache: MultipleNegativesRankingLoss, all at once")
    lr: float = setting(2e-5, "peak learning rate")
    warmup_ratio: float = setting(0.1, "share of the steps spent warming up: ceil(ratio * steps), as the Trainer")
    weight_decay: float = setting(0.01, "AdamW's decoupled weight decay (not on the norms)")
    max_grad_norm: float = setting(1.0, "clip the gradients to this global norm (0: no clipping)")
    scale: float = setting(20.0, "MNRL's scale (1 / temperature)")
    max_seq_length: int = setting(256, "tokens per text while training, <bos> and <eos> included (at most the "
                                       "model's)")
    freeze_embeddings: bool = setting(False, "keep the token embedding table as it is")
    layers_from: int = setting(0, "train layers N and above only (and the norm, the Dense layers); 0: all")
    seed: int = setting(12, "seed of the batch order")
    query_prompt_name: str = setting(QUERY_PROMPT_NAME, "the model's prompt for queries; InstructionRetrieval is "
                                                        "'task: code retrieval | query: '")
    document_prompt_name: str = setting(DOCUMENT_PROMPT_NAME, "the model's prompt for documents; document is "
                                                              "'title: none | text: '")

    def __post_init__(self):
        for name in ("steps", "batch_size", "mini_batch_size", "max_seq_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (in-batch negatives), got {self.batch_size}")
        for name in ("lr", "weight_decay", "max_grad_norm", "scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")

    @property
    def warmup_steps(self) -> int:
        """The Trainer's get_warmup_steps: ceil(warmup_ratio * steps)."""
        return math.ceil(self.warmup_ratio * self.steps)


def batch_order(n_pairs: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """The pair indices of each step's batch: a new permutation of all pairs per epoch (NumPy's default_rng(seed)),
    cut into batches of batch_size; an epoch's last, smaller batch is dropped (every step has batch_size pairs)."""
    if n_pairs < batch_size:
        raise ValueError(f"{n_pairs} training pairs: fewer than one batch of {batch_size}")
    rng = np.random.default_rng(seed)
    per_epoch = n_pairs // batch_size
    order: list[list[int]] = []
    while len(order) < steps:
        perm = rng.permutation(n_pairs)
        order += [perm[i * batch_size:(i + 1) * batch_size].tolist() for i in range(per_epoch)]
    return order[:steps]


def fit(model, rows: list[tuple[str, ...]], config: TrainConfig = TrainConfig(),
        evaluate: Callable[[object], dict] | None = None, eval_every: int | None = None,
        progress: Callable[[dict], None] | None = None, store: FrozenStore | None = None,
        until: int | None = None) -> list[dict]:
    """Fine-tune `model` in place on (query, document[, negative...]) rows with (Cached)MultipleNegativesRankingLoss.

    rows: bare texts (the prompts are config's), every row of the same length, at least 2. evaluate(model) ->
    {metric: value} runs before the first step, every eval_every steps and after the last (None: never).
    progress(record) is called after every step and evaluation. store: a FrozenStore of layer config.layers_from
    (module docstring). until: stop after this many steps, the batch order and the schedule still those of
    config.steps (the first steps of a longer run). Returns the history: one record per step {"step", "loss",
    "grad_norm", "lr", "seconds"} and per evaluation {"step", "eval": {...}}.
    """
    if eval_every is not None and (isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1):
        raise ValueError(f"eval_every must be a positive integer or None, got {eval_every!r}")
    cfg = config
    widths = {len(r) for r in rows}
    if len(widths) > 1 or min(widths, default=2) < 2:
        raise ValueError(f"every row needs the same number of texts, at least 2 (query, document[, negatives]); "
                         f"got rows of {sorted(widths)}")
    columns = training_texts(model, rows, cfg)  # one list of token-id lists per field
    order = batch_order(len(rows), cfg.batch_size, cfg.steps, cfg.seed)
    if until is not None:
        if isinstance(until, bool) or not isinstance(until, int) or not 1 <= until <= cfg.steps:
            raise ValueError(f"until must be an integer from 1 to steps ({cfg.steps}), got {until!r}")
        order = order[:until]

    params = parameters(model, cfg.freeze_embeddings, cfg.layers_from)
    opt = AdamW(params, lr=linear_schedule_lr(0, cfg.lr, cfg.warmup_steps, cfg.steps),
                weight_decay=cfg.weight_decay, no_decay=trainer_no_decay(params),
                workers=getattr(model, "workers", 1))  # the parameters in the threads encode uses
    history: list[dict] = []

    def run_eval(step: int) -> None:
        if evaluate is not None:
            t0 = time.perf_counter()
            record = {"step": step, "eval": evaluate(model), "seconds": time.perf_counter() - t0}
            history.append(record)
            if progress is not None:
                progress(record)

    run_eval(0)
    for step, batch in enumerate(order):
        t0 = time.perf_counter()
        cols = [[column[i] for i in batch] for column in columns]
        if cfg.gradcache:
            loss, grads = cached_mnrl_gradients(model, cols, cfg.mini_batch_size, cfg.scale,
                                                freeze_embeddings=cfg.freeze_embeddings, layers_from=cfg.layers_from,
                                                store=store)
        else:
            loss, grads = mnrl_gradients(model, cols, cfg.scale, freeze_embeddings=cfg.freeze_embeddings,
                                         layers_from=cfg.layers_from, store=store)
        if not np.isfinite(loss):
            raise FloatingPointError(f"step {step + 1}: the loss is {loss}; stopping (lower --lr?)")
        norm = clip_grad_norm(grads, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else float("nan")
        lr = opt.lr
        opt.step(grads)
        opt.lr = linear_schedule_lr(step + 1, cfg.lr, cfg.warmup_steps, cfg.steps)
        record = {"step": step + 1, "loss": float(loss), "grad_norm": norm, "lr": lr,
                  "seconds": time.perf_counter() - t0}
        history.append(record)
        if progress is not None:
            progress(record)
        if eval_every is not None and (step + 1) % eval_every == 0 and step + 1 < len(order):
            run_eval(step + 1)
    run_eval(len(order))
    return history


def training_texts(model, rows: list[tuple[str, ...]], cfg: TrainConfig) -> list[list[list[int]]]:
    """The token ids fit() trains on: one column per field of the rows, the query prompt before the first field
    and the document prompt before the others, cut to max_seq_length (tokenize()).  -> [field][row] id lists"""
    prompts = model.prompts
    for name in (cfg.query_prompt_name, cfg.document_prompt_name):
        if name not in prompts:
            raise ValueError(f"prompt {name!r} is not among the model's prompts {sorted(prompts)}")
    pq, pd = prompts[cfg.query_prompt_name], prompts[cfg.document_prompt_name]
    return [tokenize(model, [(pq if c == 0 else pd) + r[c] for r in rows], cfg.max_seq_length)
            for c in range(len(rows[0]))] if rows else []


@dataclass(frozen=True)
class MiningConfig:
    """Hard-negative mining for training, sentence-transformers' mine_hard_negatives settings (its defaults but
    num_negatives, which is 0 here: no mining unless asked). Each becomes an option of `gemma-np train`."""

    num_negatives: int = setting(0, "hard negatives mined per (query, document) pair with the base model, as "
                                    "mine_hard_negatives (0: in-batch negatives only)")
    range_min: int = setting(0, "skip the first N candidates (the likeliest false negatives)")
    range_max: int | None = setting(None, "consider the top N candidates only (default: the library's)")
    absolute_margin: float | None = setting(None, "a negative must score at least this much below the positive")
    relative_margin: float | None = setting(None, "a negative must score at most (1 - X) times the positive's")
    max_score: float | None = setting(None, "skip candidates scoring above X (likely false negatives)")
    sampling_strategy: str = setting("top", f"which candidates to keep: {' or '.join(SAMPLING_STRATEGIES)}")
    mining_seed: int = setting(12, "seed of Python's random for sampling_strategy random")

    def __post_init__(self):
        if isinstance(self.num_negatives, bool) or not isinstance(self.num_negatives, int) or self.num_negatives < 0:
            raise ValueError(f"num_negatives must be an integer >= 0, got {self.num_negatives!r}")
        if self.sampling_strategy not in SAMPLING_STRATEGIES:
            raise ValueError(f"sampling_strategy must be one of {SAMPLING_STRATEGIES}, got {self.sampling_strategy!r}")


def mine(model, pairs: list[tuple[str, str]], mining: MiningConfig, cfg: TrainConfig) -> list[tuple[str, ...]]:
    """(query, document) pairs -> (query, document, negative_1, ..., negative_k) rows: mine_hard_negatives on the
    pairs' documents as the corpus, embedded by `model` (an EmbeddingGemma, or step.WithFrozenLayers) with the
    training prompts, output_format "n-tuple" (a pair with fewer than k negatives is dropped, as the library does).
    The library's range_max default and its checks apply. Returns the pairs as they are when num_negatives is 0."""
    if mining.num_negatives == 0:
        return [tuple(p) for p in pairs]
    import random

    out = mine_hard_negatives([q for q, _ in pairs], [d for _, d in pairs], model=model,
                              range_min=mining.range_min, range_max=mining.range_max, max_score=mining.max_score,
                              absolute_margin=mining.absolute_margin, relative_margin=mining.relative_margin,
                              num_negatives=mining.num_negatives, sampling_strategy=mining.sampling_strategy,
                              query_prompt_name=cfg.query_prompt_name, corpus_prompt_name=cfg.document_prompt_name,
                              output_format="n-tuple", rng=random.Random(mining.mining_seed))
    negatives = [out[f"negative_{j}"] for j in range(1, mining.num_negatives + 1)]
    return [tuple(r) for r in zip(out["anchor"], out["positive"], *negatives)]


def store_texts(model, pairs: list[tuple[str, str]], cfg: TrainConfig,
                eval_set: tuple[dict, dict, dict] | None = None) -> list[list[int]]:
    """Every text a run with cfg.layers_from passes through the frozen layers, as token ids, each once: the
    training columns as fit() cuts them (training_texts; a mined negative is one of the pairs' documents, cut as
    they are), then the pairs as mine() embeds them (model.encode's tokenization: prompts in, no cut at
    max_seq_length) whether or not this run mines, so that runs with other mining settings share one store, then
    the eval split's queries and corpus as the evaluator encodes them (eval_set: load_ir's (queries, corpus,
    relevant_docs)). The order is fixed: it is part of the store's key (frozen.frozen_key)."""
    texts = [x for column in training_texts(model, pairs, cfg) for x in column]
    pq, pd = model.prompts[cfg.query_prompt_name], model.prompts[cfg.document_prompt_name]
    encoded = [pq + q for q, _ in pairs] + [pd + d for _, d in pairs]
    if eval_set is not None:
        encoded += [pq + q for q in eval_set[0].values()] + [pd + d for d in eval_set[1].values()]
    texts += model.tokenize(encoded)[0]
    return [list(x) for x in dict.fromkeys(map(tuple, texts))]


def tokenize(model, texts: list[str], max_seq_length: int) -> list[list[int]]:
    """Token ids of each text, cut to max_seq_length with <bos> and <eos> kept (as the library truncates when
    its max_seq_length is set): the model's tokenizer cuts at the model's own maximum (2048), then this at
    max_seq_length; the smaller of the two applies."""
    ids, _ = model.tokenize(texts)
    return [x if len(x) <= max_seq_length else x[:max_seq_length - 1] + [x[-1]] for x in ids]


def config_dict(cfg: TrainConfig) -> dict:
    return {**asdict(cfg), "warmup_steps": cfg.warmup_steps}
