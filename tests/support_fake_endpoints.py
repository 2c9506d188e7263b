"""Small embedding servers on 127.0.0.1 that serve gemma_np's vectors, faithfully or with one fault, speaking
the OpenAI embeddings API (POST /v1/embeddings) and Text Embeddings Inference's (POST /embed)."""

from __future__ import annotations

import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from gemma_np.nn.head import l2_normalize
from gemma_np.verify.runtimes.faults import fault_embeddings, parse_faults

# Faults of the serving layer rather than the model (see gemma_np.verify.runtimes.faults for the model's, which combine
# with '+': "window_512+bfloat16"). bfloat16_long: bfloat16 vectors for texts past 257 tokens, float32 for the
# rest, so that precision noise alone lies where a window fault would show.
SERVING_FAULTS = ("no_prompt", "other_prompt", "double_prompt", "truncated_unnormalized", "ignores_dimensions",
                  "random", "bfloat16_long")
WINDOW_EDGE = 257


class FakeEndpoint:
    """A server for one model, one fault (None: faithful). `with FakeEndpoint(model, fault) as url: ...`

    `batch_noise`: a request of several texts moves each vector by this much (1 - cos to the same text alone is
    about batch_noise ** 2 / 2), a direction drawn from the request's size and the text's place in it, the length
    kept: a server whose output depends on the batch (llama.cpp on Q8_0 weights: 1 - cos up to 3e-4, measured).
    A request of one text is left as it is.
    """

    def __init__(self, model, fault: str | None = None, embed=fault_embeddings, batch_noise: float = 0.0):
        if fault is not None and fault not in SERVING_FAULTS:
            parse_faults(fault)  # a model fault, or several joined with '+'; raises on anything else
        self.model, self.fault, self.embed, self.batch_noise = model, fault, embed, batch_noise
        self.requests: list[dict] = []

    # -------------------------------------------------------------------------------- what it computes
    def vectors(self, texts: list[str], prompt: str, dimensions: int | None) -> np.ndarray:
        m, fault = self.model, self.fault
        if fault == "double_prompt":
            prompt = m.resolve_prompt(prompt_name="query") + prompt  # a server-side default prompt as well
        if fault == "random":  # unit vectors unrelated to the model, the same for a text in any request
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
