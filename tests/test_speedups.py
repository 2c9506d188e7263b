"""The speed-ups of encode() and the profiler beside them: each equal to the plain form within the parity bar.

- EmbeddingGemma.workers: a forward's texts split over threads, BLAS on one thread each;
- gemma_np.nn.linear.linear: the projections as one [B*S, in] product instead of B per-text products, and a short
  input's products by blocks of output features on two threads (linears_split, threads.beside);
- gemma_np.nn.trace.OpTimer: seconds per op, taking the same paths as no trace (blocked attention, chunked MLP);
- gemma_np.nn.threads.on_rows: a row-wise function on blocks of rows in several threads, the same bits as one call.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from gemma_np import EmbeddingGemma
from gemma_np.errors import InputError
from gemma_np.nn import attention, linear, mlp, threads
from gemma_np.nn.sentence import pad_batch
from gemma_np.nn.trace import LAYER_OPS, OpTimer, Trace, stores_arrays

from support_bounds import assert_close, parity_bar
from support_tiny_models import CORPUS, SPECS, build

pytest.importorskip("torch")  # tiny_models builds the models with transformers

TEXTS = [CORPUS[0], CORPUS[1][:20], CORPUS[2], "mars", CORPUS[1], CORPUS[0][:9], "a b c", CORPUS[2][:31]]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> EmbeddingGemma:
    folder = tmp_path_factory.mktemp("speedups")
    build(SPECS[0], folder)
    return EmbeddingGemma.from_pretrained(folder)


@pytest.mark.parametrize("workers", [2, 3, 8])
def test_workers_equal_one_forward_within_the_parity_bar(tiny_model, workers, monkeypatch):
    tiny_model.workers = 1
    want = tiny_model.encode(TEXTS, batch_size=5)
    tiny_model.workers = workers
    got = tiny_model.encode(TEXTS, batch_size=5)
    # Two float32 forwards of the same texts in batches of other shapes: the project's parity bar between two
    # float32 implementations (docs/tolerances.md), scaled to the tiny model's 24 coordinates.
    assert_close(f"tiny: {workers} workers against 1", got, want, parity_bar(24))
    # One text never goes to the pool: the same forward as with one worker, bit for bit.
    alone = tiny_model.encode(TEXTS[:1])
    tiny_model.workers = 1
    np.testing.assert_array_equal(tiny_model.encode(TEXTS[:1]), alone)


def test_workers_leave_the_blas_thread_count_as_it_was(tiny_model):
    from threadpoolctl import threadpool_info

    before = [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]
    tiny_model.workers = 2
    tiny_model.encode(TEXTS, batch_size=8)
    assert [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"] == before


def test_bad_worker_counts_are_named(tiny_model, monkeypatch):
    from gemma_np.model import default_workers

    tiny_model.workers = 0
    with pytest.raises(InputError, match="workers"):
        tiny_model.encode(TEXTS)
    monkeypatch.setenv("GEMMA_NP_WORKERS", "two")
    with pytest.raises(InputError, match=r"\$GEMMA_NP_WORKERS must be a whole number of workers.*'two'"):
        default_workers()
    monkeypatch.setenv("GEMMA_NP_WORKERS", "3")
    assert default_workers() == 3
    tiny_model.workers = 2


def test_flattened_projection_is_the_same_product(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 16)).astype(np.float32)
    w = rng.standard_normal((5, 16)).astype(np.float32)
    want = np.einsum("bsi,oi->bso", x.astype(np.float64), w.astype(np.float64))
    got = linear.linear(x, w)
    assert got.shape == (3, 7, 5) and got.dtype == np.float32
    # 16-term float32 dot products: within 16 u of the sum of |terms| (the standard bound, n u sum |x w|)
    scale = np.einsum("bsi,oi->bso", np.abs(x), np.abs(w))
    assert np.all(np.abs(got - want) <= 16 * 2.0**-24 * scale)
    monkeypatch.setattr(linear, "FLATTEN", False)
    np.testing.assert_array_equal(linear.linear(x, w), x @ w.T)  # the per-text form is NumPy's own


# The projections' shapes, [out, in]: q and o, k and v, gate and up (768 in), down (1152 in).
SPLIT_SHAPES = {768: [(768, 768), (256, 768), (1152, 768)], 1152: [(768, 1152)]}


@pytest.mark.parametrize("rows", [1, 5, 18, 36])
def test_split_products_are_the_same_products(rows, monkeypatch):
    """linears_split, a short input's products by blocks of output features on two threads: every output within the
    standard float32 bound of the float64 product, as the plain form; bit for bit the same on one thread as on two
    (which thread computes a block changes nothing, and a block left uncomputed would show as np.empty's garbage)."""
    rng = np.random.default_rng(rows)
    for n_in, shapes in SPLIT_SHAPES.items():
        x = rng.standard_normal((1, rows, n_in)).astype(np.float32)
        ws = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        monkeypatch.setattr(threads, "THREADS", 2)
        got = linear.linears_split(x, tuple(ws))
        assert any(t.name == "gemma_np-beside" for t in threading.enumerate())  # the helper took its share
        for g, w in zip(got, ws):
            assert g.shape == (1, rows, w.shape[0]) and g.dtype == np.float32 and g.flags.c_contiguous
            want = x.astype(np.float64) @ w.T.astype(np.float64)
            # n_in-term float32 dot products: within n_in u of the sum of |terms| (the standard bound, n u sum |x w|)
            assert np.all(np.abs(g - want) <= n_in * 2.0**-24 * (np.abs(x) @ np.abs(w).T))
        monkeypatch.setattr(threads, "THREADS", 1)
        for g, a in zip(got, linear.linears_split(x, tuple(ws))):
            np.testing.assert_array_equal(g, a)


def test_which_products_take_the_split(monkeypatch):
    monkeypatch.setattr(threads, "small_matrix_kernels", lambda: True)
    w = np.zeros((1152, 768), np.float32)
    x = np.zeros((1, 18, 768), np.float32)
    assert linear.takes_split_path(x, (w,))
    assert not linear.takes_split_path(x.astype(np.float64), (w,))  # float32 only: float64 is the exact reference
    assert not linear.takes_split_path(np.zeros((1, linear.SPLIT_ROWS + 1, 768), np.float32), (w,))  # long: BLAS's
    assert not linear.takes_split_path(x, (w[:1000],))  # 1000 features: no block size divides them
    assert linear.split_chunk(18, np.zeros((768, 1152), np.float32)) == 32
    assert linear.split_chunk(30, np.zeros((768, 1152), np.float32)) == 16  # 30 * 1152 * 32 > 100**3
    monkeypatch.setattr(threads, "small_matrix_kernels", lambda: False)  # Haswell's kernels pack every block
    assert not linear.takes_split_path(x, (w,))
    monkeypatch.setattr(threads, "small_matrix_kernels", lambda: True)
    monkeypatch.setattr(linear, "SPLIT", False)
    assert not linear.takes_split_path(x, (w,))


def test_split_queries_equal_the_plain_forward_within_the_parity_bar(tiny_model, monkeypatch):
    monkeypatch.setattr(threads, "small_matrix_kernels", lambda: True)  # the split on every machine ...
    monkeypatch.setattr(linear, "SPLIT_ROWS", 40)  # ... for every text (the tiny model's longest: 40 tokens)
    monkeypatch.setattr(linear, "SPLIT", False)
    want = tiny_model.encode_query(TEXTS, batch_size=1)
    calls = []
    split = linear.linears_split
    monkeypatch.setattr(linear, "linears_split", lambda x, ws: calls.append(len(ws)) or split(x, ws))
    monkeypatch.setattr(linear, "SPLIT", True)
    got = tiny_model.encode_query(TEXTS, batch_size=1)
    layers = tiny_model.config.num_hidden_layers
    assert calls.count(3) == layers * len(TEXTS) and calls.count(2) == layers * len(TEXTS)  # q k v; gate up
    assert_close("tiny: split products against one BLAS call each", got, want, parity_bar(24))


def test_beside_runs_both_jobs_and_hands_back_their_errors(monkeypatch):
    monkeypatch.setattr(threads, "THREADS", 2)
    where = {}

    def job():
        where["job"] = threading.current_thread().name
        return 1

    def own():
        where["own"] = threading.current_thread().name
        return 2

    assert threads.beside(job, own) == (1, 2)
    assert where == {"job": "gemma_np-beside", "own": threading.current_thread().name}
    with pytest.raises(ValueError, match="in the helper"):
        threads.beside(lambda: (_ for _ in ()).throw(ValueError("in the helper")), own)
    with pytest.raises(KeyError, match="here"):
        threads.beside(job, lambda: {}["here"])
    # While the helper is busy (here: with this call's own job), a nested call runs both jobs on its own thread.
    assert threads.beside(job, lambda: threads.beside(job, own)) == (1, (1, 2))
    monkeypatch.setattr(threads, "THREADS", 1)
    where.clear()
    assert threads.beside(job, own) == (1, 2) and where["job"] == where["own"]


def test_beside_in_a_forked_child_starts_its_own_helper(monkeypatch):
    """A fork copies only the calling thread: a child that used the parent's helper would wait for it forever."""
    import multiprocessing

    monkeypatch.setattr(threads, "THREADS", 2)
    threads.beside(int, int)  # the parent's helper exists
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        result = pool.apply_async(_beside_in_child)
        assert result.get(timeout=60) == (1, 2, "gemma_np-beside")


def _beside_in_child():
    threads.THREADS = 2
    where = []
    got = threads.beside(lambda: where.append(threading.current_thread().name) or 1, lambda: 2)
    return (*got, where[0])


def test_op_timer_takes_the_untraced_paths_and_changes_nothing(tiny_model, monkeypatch):
    monkeypatch.setattr(attention, "BLOCKED_FROM", 4)  # the tiny texts take the blocked attention path ...
    monkeypatch.setattr(mlp, "CHUNK_TOKENS", 8)  # ... and the chunked MLP
    ids, mask = pad_batch(tiny_model.tokenize(TEXTS)[0])
    plain = tiny_model.forward(ids, mask)["sentence_embedding"]
    timer = OpTimer()
    timed = tiny_model.forward(ids, mask, trace=timer)["sentence_embedding"]
    np.testing.assert_array_equal(timed, plain)  # the same paths: the same bits
    assert len(timer) == 0 and not stores_arrays(timer) and stores_arrays(Trace()) and stores_arrays({})
    ops = set(timer.seconds)
    assert {"self_attn.scores", "self_attn.probs", "mlp.act", "embed_tokens", "norm"} <= ops
    assert ops - {"embed_tokens", "norm", "pooled", "dense.0", "dense.1", "sentence_embedding"} \
        - {f"rope.{t}.{f}" for t in ("full_attention", "sliding_attention") for f in ("cos", "sin")} <= set(LAYER_OPS)
    assert all(v >= 0 for v in timer.seconds.values())
    # A storing trace still takes the plain paths: it holds the [B, H, S, T] scores of every layer.
    trace = {}
    tiny_model.forward(ids, mask, trace=trace)
    assert trace["layers.0.self_attn.scores"].shape[-1] == ids.shape[1]


@pytest.mark.parametrize("n", [2, 3, 5])
def test_rows_over_threads_are_the_same_bits(n, monkeypatch):
    """on_rows splits the rows of GELU's backward and of RMSNorm's dx over n threads (really: each block's thread
    is recorded: this one and the pool's); both equal one call bit for bit, and a worker's exception reaches the caller."""
    import threading

    from gemma_np.nn import norms, threads

    rng = np.random.default_rng(n)
    x = (rng.normal(size=(7, 5, 64)) * 3).astype(np.float32)  # [B, S, N]
    dy = rng.normal(size=x.shape).astype(np.float32)
    w = (rng.normal(size=64) * 0.3).astype(np.float32)
    cache: dict = {}
    norms.rms_norm(x, w, 1e-6, cache)
    monkeypatch.setattr(threads, "THREADS", 1)
    want_gelu = mlp.gelu_tanh_backward(dy, x)
    want_dx, want_dw = norms.rms_norm_backward(dy, cache)
    monkeypatch.setattr(threads, "THREADS", n)
    monkeypatch.setattr(threads, "MIN_ELEMENTS", 0)
    seen = []

    def recorded(d, x_, out):
        seen.append((threading.get_ident(), len(x_)))
        return mlp.gelu_tanh_backward(d, x_, out=out)

    np.testing.assert_array_equal(threads.on_rows(recorded, dy, x), want_gelu)
    assert sorted(rows for _, rows in seen) == sorted(7 * (i + 1) // n - 7 * i // n for i in range(n))
    # this thread and the pool's (which may hand two blocks to one idle worker)
    assert threading.get_ident() in {ident for ident, _ in seen} and len({ident for ident, _ in seen}) >= 2
    dx, dw = norms.rms_norm_backward(dy, cache)
    np.testing.assert_array_equal(dx, want_dx)
    np.testing.assert_array_equal(dw, want_dw)

    def fails(d, x_, out):
        if len(seen) and threading.get_ident() != seen[0][0]:
            raise ValueError("in a worker")
        out[...] = 0
        return out

    seen[:] = [(threading.get_ident(), 0)]
    with pytest.raises(ValueError, match="in a worker"):
        threads.on_rows(fails, dy, x)


@pytest.fixture
def maps(monkeypatch) -> list[tuple[int, int]]:
    """(threads, parts) of every worker_pool.map the training step makes, recorded as it runs."""
    from gemma_np.nn import threads
    from gemma_np.train import step

    maps = []

    class Recorded(threads.worker_pool):
        def map(self, f, parts):
            maps.append((self.n, len(parts)))
            return super().map(f, parts)

    monkeypatch.setattr(step, "worker_pool", Recorded)
    return maps


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("freeze_embeddings, layers_from", [(True, 0), (False, 2)], ids=["table-frozen", "top-layers"])
def test_columns_in_threads_give_the_plain_step(tiny_model, workers, freeze_embeddings, layers_from, maps):
    """mnrl_gradients with workers: the columns' forwards and backwards in threads (BLAS on one thread each), the
    gradients added in column order. Against workers=1, the same loss and gradients bit for bit: the same sums in
    the same order (matrices this small run on one BLAS thread either way; on the real model a BLAS given more
    threads may split a product and round it otherwise, which bench_training's loss check shows). The table
    trained: no threads."""
    from gemma_np.train import step

    columns = [tiny_model.tokenize(TEXTS[i::3])[0][:2] for i in range(3)]  # anchors, positives, negatives
    kw = {"freeze_embeddings": freeze_embeddings, "layers_from": layers_from}
    want_loss, want = step.mnrl_gradients(tiny_model, columns, workers=1, **kw)
    assert maps == []
    loss, got = step.mnrl_gradients(tiny_model, columns, workers=workers, **kw)
    assert maps == [(min(workers, 3), 3), (min(workers, 3), 3)]  # the forwards, then the backwards
    assert set(got) == set(want)
    assert loss == want_loss
    for name, g in want.items():
        assert np.array_equal(got[name], g), name
    maps.clear()
    step.mnrl_gradients(tiny_model, columns, workers=workers)  # the table trained: the plain path
    assert maps == []


def test_gradcache_columns_in_threads_give_the_plain_step(tmp_path_factory, maps):
    """cached_mnrl_gradients with workers: each column's mini-batches in a thread, the columns' gradients added
    after. The sums associate per column, so against workers=1 the gradients agree to the float64 gradient bar
    (1e-10 of each tensor's largest entry, docs/tolerances.md), not bit for bit; the loss is the same number."""
    from gemma_np.train import step

    folder = tmp_path_factory.mktemp("gradcache-threads")
    build(SPECS[0], folder)
    model = EmbeddingGemma.from_pretrained(folder, dtype="float64")
    columns = [model.tokenize((TEXTS * 2)[i::3])[0][:3] for i in range(3)]  # 3 columns of 3 texts
    want_loss, want = step.cached_mnrl_gradients(model, columns, 2, freeze_embeddings=True, workers=1)
    assert maps == []
    seen = []
    loss, got = step.cached_mnrl_gradients(model, columns, 2, freeze_embeddings=True, workers=2,
                                           progress=lambda done, total: seen.append((done, total)))
    assert maps == [(2, 3), (2, 3)]  # pass 1 and pass 3, the three columns over two threads
    assert sorted(seen) == [(k, 6) for k in range(1, 7)]  # every mini-batch of every column, once
    assert loss == want_loss and set(got) == set(want)
    for name, g in want.items():
        assert np.max(np.abs(got[name] - g)) <= 1e-10 * np.max(np.abs(g)), name


def test_describe_machine_names_the_cpu_the_cores_and_the_blas_kernels(monkeypatch):
    """The line each notebook's first cell prints: the CPU as /proc/cpuinfo names it, the cores, NumPy's BLAS and
    the kernels it runs (what float32's last bits depend on), and BLAS's thread count where it was told another."""
    cpu = threads.cpu_info()
    line = threads.describe_machine()
    assert line.startswith(cpu.get("model name", "")) and f"NumPy {np.__version__} with " in line
    api, _, arch = threads.numpy_blas().partition(" ")
    assert arch in line
    monkeypatch.setattr(threads, "_numpy_blas", "openblas Haswell")
    monkeypatch.setattr(threads, "THREADS", 1)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    line = threads.describe_machine()
    assert "2 cores, BLAS told 1 thread;" in line and "with OpenBLAS Haswell kernels;" in line
