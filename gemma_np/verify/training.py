"""The same fine-tuning run with sentence-transformers' own trainer: the oracle of gemma_np.train.fit.

st_fit() hands SentenceTransformerTrainer the very run that fit() does: the same rows (pairs, or pairs with hard
negatives as columns negative_1 ...), prompts, batch order (a batch sampler that yields fit's batch_order),
CachedMultipleNegativesRankingLoss with the same scale and mini-batch size (MultipleNegativesRankingLoss when the
config's gradcache is off), AdamW (the single-tensor torch path) with the Trainer's no-decay groups, the linear schedule
with the same warm-up steps, clipping at the same norm, the same frozen tensors and max_seq_length. It returns
the loss of every step, read from the loss module itself (the Trainer's logs round to 4 digits).

Needs torch, transformers and sentence-transformers with its training extras (datasets, accelerate).
"""

from __future__ import annotations

import tempfile
import time


def st_fit(st, pairs: list[tuple[str, ...]], config, order: list[list[int]] | None = None,
           output_dir: str | None = None, until: int | None = None) -> dict:
    """Train the SentenceTransformer `st` in place as gemma_np.train.fit would train its model.

    Returns {"losses": the loss of every step, "seconds": the trainer's wall time}.

    config: a gemma_np.train.fit.TrainConfig. order: each step's pair indices (default fit's batch_order).
    until: stop after this many steps, the schedule still that of config.steps (as fit's until).
    """
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from transformers import TrainerCallback
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    from ..train.fit import batch_order

    cfg = config
    if order is None:
        order = batch_order(len(pairs), cfg.batch_size, cfg.steps, cfg.seed)
    if len(order) != cfg.steps or any(len(b) != cfg.batch_size for b in order):
        raise ValueError(f"order must hold {cfg.steps} batches of {cfg.batch_size} indices")

    class FixedOrder(DefaultBatchSampler):
        """Yields the given batches, in order, once."""

        def __iter__(self):
            yield from order

        def __len__(self):
            return len(order)

    class RecordingLoss(CachedMultipleNegativesRankingLoss if cfg.gradcache else MultipleNegativesRankingLoss):
        """The library's loss, keeping the value of each call (one per step)."""

        losses: list[float]

        def forward(self, sentence_features, labels):
            loss = super().forward(sentence_features, labels)
            self.losses.append(float(loss.detach()))
            return loss

    encoder = st[0].auto_model
    for name, p in encoder.named_parameters():
        if name == "embed_tokens.weight":
            p.requires_grad_(not cfg.freeze_embeddings and cfg.layers_from == 0)
        elif name.startswith("layers."):
            p.requires_grad_(int(name.split(".")[1]) >= cfg.layers_from)
    st.max_seq_length = min(cfg.max_seq_length, st.max_seq_length)  # as fit's tokenize: the smaller of the two
    prompts = st.prompts
    names = ["anchor", "positive"] + [f"negative_{j}" for j in range(1, len(pairs[0]) - 1)]
    dataset = Dataset.from_dict({name: [r[c] for r in pairs] for c, name in enumerate(names)})
    sizes = {"mini_batch_size": cfg.mini_batch_size} if cfg.gradcache else {}
    loss = RecordingLoss(st, scale=cfg.scale, **sizes)
    loss.losses = []
    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=output_dir or tmp,
            max_steps=cfg.steps,
            per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.lr,
            warmup_steps=cfg.warmup_steps,
            weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm,
            lr_scheduler_type="linear",
            optim="adamw_torch",  # torch.optim.AdamW; on CPU tensors its single-tensor path, as gemma_np's
            batch_sampler=FixedOrder,
            prompts={name: prompts[cfg.query_prompt_name if name == "anchor" else cfg.document_prompt_name]
                     for name in names},
            seed=cfg.seed,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
            dataloader_drop_last=False,
        )
        trainer = SentenceTransformerTrainer(model=st, args=args, train_dataset=dataset, loss=loss)
        if until is not None:
            class StopAt(TrainerCallback):
                """Ends training after `until` steps; max_steps (and so the schedule) stays config.steps."""

                def on_step_end(self, args, state, control, **kwargs):
                    control.should_training_stop = state.global_step >= until

            trainer.add_callback(StopAt())
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    if until is not None and len(loss.losses) != until:
        raise RuntimeError(f"the trainer ran {len(loss.losses)} steps, not the {until} asked")
    for p in st.parameters():
        p.requires_grad_(True)
    return {"losses": loss.losses, "seconds": seconds}
