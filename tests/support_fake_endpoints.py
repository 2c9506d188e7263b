"""Small embedding servers on 127.0.0.1 that serve gemma_np's vectors, faithfully or with one fault, speaking
the OpenAI embeddings API (POST /v1/embeddings) and Text Embeddings Inference's (POST /embed)."""

from __future__ import annotations

import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from gemma_np.nn.head import l2_normalize
from gemma_np.nn.sentence import pad_batch
from gemma_np.verify.runtimes.faults import fault_embeddings, parse_faults

# Faults of the serving layer rather than the model (see gemma_np.verify.runtimes.faults for the model's, which combine
# with '+': "window_512+bfloat16"). bfloat16_long: bfloat16 vectors for texts past 257 tokens, float32 for the
# rest, so that precision noise alone lies where a window fault would show.
SERVING_FAULTS = ("no_prompt", "other_prompt", "double_prompt", "truncated_unnormalized", "ignores_dimensions",
                  "random", "bfloat16_long")
WINDOW_EDGE = 257


class Refused(Exception):
    """The fake server answers this request with an HTTP error."""


class FakeEndpoint:
    """A server for one model, one fault (None: faithful). `with FakeEndpoint(model, fault) as url: ...`

    `batch_noise`: a request of several texts moves each vector by this much (1 - cos to the same text alone is
    about batch_noise ** 2 / 2), a direction drawn from the request's size and the text's place in it, the length
    kept: a server whose output depends on the batch (llama.cpp on Q8_0 weights: 1 - cos up to 3e-4, measured).
    A request of one text is left as it is.

    `length` (side, T): what the server does with an input past T tokens (prompt, <bos> and <eos> counted):
    "head" keeps <bos>, the first T - 2 and <eos>; "cut" the first T ids (<eos> lost, llama.cpp's n_batch);
    "tail" <bos>, the last T - 2 and <eos>; "error" answers the whole request HTTP 413 (a RoPE table of T,
    vllm semantic-router #3388); "none" reads every token (T None). None: the reference's ("head", 2048), run
    through model.forward as the others are.
    `batch_faults`: "equal_no_window" (a request of several texts all of one token length gets no window: TEI
    #882) and/or "short_long_nan" (in a request whose longest text is more than WINDOW_EDGE tokens longer than
    another, that shorter text comes back NaN: transformers #45491).
    """

    def __init__(self, model, fault: str | None = None, embed=fault_embeddings, batch_noise: float = 0.0,
                 length: tuple[str, int | None] | None = None, batch_faults: tuple[str, ...] = ()):
        if fault is not None and fault not in SERVING_FAULTS:
            parse_faults(fault)  # a model fault, or several joined with '+'; raises on anything else
        if length is not None and length[0] not in ("head", "cut", "tail", "error", "none"):
            raise ValueError(f"length: unknown side {length[0]!r}")
        if set(batch_faults) - {"equal_no_window", "short_long_nan"}:
            raise ValueError(f"batch_faults: unknown {batch_faults}")
        self.model, self.fault, self.embed, self.batch_noise = model, fault, embed, batch_noise
        self.length, self.batch_faults = length, tuple(batch_faults)
        self.requests: list[dict] = []
        self._tokenizer = None

    def _ids(self, text: str) -> list[int]:
        """The token ids of text, not truncated."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(self.model.folder / "tokenizer.json"))
            self._tokenizer.no_truncation()
        return self._tokenizer.encode(text).ids

    def _by_length(self, texts: list[str], prompt: str) -> np.ndarray:
        side, T = self.length
        ids = [self._ids(prompt + t) for t in texts]
        if side == "error" and any(len(x) > T for x in ids):
            raise Refused(f"input of {max(len(x) for x in ids)} tokens past the position table of {T}")
        rows = []
        for x in ids:
            if side in ("head", "cut", "tail") and len(x) > T:
                x = {"head": x[:T - 1] + x[-1:], "cut": x[:T], "tail": x[:1] + x[len(x) - 1 - (T - 2):]}[side]
            rows.append(self.model.forward(*pad_batch([x]))["sentence_embedding"][0])
        return np.stack(rows)

    def _batch(self, texts: list[str], prompt: str) -> np.ndarray | None:
        """The vectors a batch fault gives this request, or None if none applies."""
        if len(texts) < 2:
            return None
        n = [len(x) for x in self.model.tokenize([prompt + t for t in texts])[0]]
        if "equal_no_window" in self.batch_faults and len(set(n)) == 1:
            return np.asarray(self.embed(self.model, texts, prompt, "no_window"))
        if "short_long_nan" in self.batch_faults and max(n) - min(n) > WINDOW_EDGE:
            v = np.array(self.model.encode(texts, prompt=prompt), dtype=np.float64)
            v[[max(n) - k > WINDOW_EDGE for k in n]] = np.nan
            return v
        return None

    # -------------------------------------------------------------------------------- what it computes
    def vectors(self, texts: list[str], prompt: str, dimensions: int | None) -> np.ndarray:
        m, fault = self.model, self.fault
        if fault == "double_prompt":
            prompt = m.resolve_prompt(prompt_name="query") + prompt  # a server-side default prompt as well
        batched = self._batch(texts, prompt) if self.batch_faults else None
        if batched is not None:
            v = batched
        elif self.length is not None:
            v = self._by_length(texts, prompt)
        elif fault == "random":  # unit vectors unrelated to the model, the same for a text in any request
            v = l2_normalize(np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(768)
                                       for t in texts])) if texts else np.zeros((0, 768))
        elif fault == "bfloat16_long":
            ids, _ = m.tokenize([prompt + t for t in texts])
            long = [len(x) > WINDOW_EDGE for x in ids]
            v = np.stack([self.embed(m, [t], prompt, "bfloat16")[0] if is_long else m.encode([t], prompt=prompt)[0]
                          for t, is_long in zip(texts, long)]) if texts else np.zeros((0, 768), np.float32)
        elif fault is not None and fault not in SERVING_FAULTS:
            v = self.embed(m, texts, prompt, fault)
        else:
            v = m.encode(texts, prompt=prompt) if texts else np.zeros((0, 768), np.float32)
        if dimensions is not None and fault != "ignores_dimensions":
            v = v[:, :dimensions]
            if fault not in ("truncated_unnormalized", "unnormalized"):
                v = l2_normalize(v)
        if self.batch_noise and len(texts) > 1:
            v = np.array(v, dtype=np.float64)
            for i, row in enumerate(v):
                e = np.random.default_rng([len(texts), i]).standard_normal(row.shape[0])
                moved = row + self.batch_noise * np.linalg.norm(row) * e / np.linalg.norm(e)
                v[i] = moved * (np.linalg.norm(row) / np.linalg.norm(moved))
        return v

    def tei_prompt(self, name: str | None) -> str:
        if self.fault == "no_prompt" or name is None:
            return ""
        if self.fault == "other_prompt":
            name = {"query": "document", "document": "query"}[name]
        return self.model.resolve_prompt(prompt_name=name)

    # -------------------------------------------------------------------------------- HTTP
    def __enter__(self) -> str:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, **body})
                try:
                    self.answer(body)
                except Refused as e:
                    self.send_error(413, str(e))

            def answer(self, body):
                if self.path == "/v1/embeddings":
                    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                    v = outer.vectors(texts, "", body.get("dimensions"))
                    answer = {"object": "list", "model": body.get("model"),
                              "data": [{"object": "embedding", "index": i, "embedding": row.tolist()}
                                       for i, row in enumerate(v)]}
                elif self.path == "/embed":
                    v = outer.vectors(body["inputs"], outer.tei_prompt(body.get("prompt_name")),
                                      body.get("dimensions"))
                    answer = [row.tolist() for row in v]
                else:
                    self.send_error(404, f"no route {self.path}")
                    return
                raw = json.dumps(answer).encode()  # NaN is written as NaN, as Python servers do
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
