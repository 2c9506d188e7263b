"""Check a served EmbeddingGemma against gemma_np, and say what is wrong with it: `gemma-np verify endpoint`.

The HTTP side only; the judging is gemma_np.verify.runtimes.judge's. The probe texts (queries and documents,
short and long, and one holding the strings "<bos>" and "<eos>") go to the server twice: one text per request,
and all in one request (one per prompt with tei). Each vector sent alone is judged against gemma_np's, and
each text's two vectors are compared with each other (batch-dependent outputs). Two APIs:

    openai  POST {url}/v1/embeddings  {"input": [...], "model": ..., "dimensions": k}
            The OpenAI API has no prompts: as a client must, the checker writes the prompt before each text.
    tei     POST {url}/embed          {"inputs": [...], "prompt_name": "query"|"document", "dimensions": k}
            Text Embeddings Inference applies the prompt it is asked for by name.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import numpy as np

from ...errors import GemmaNPError
from .judge import MIN_COSINE, Finding, Probe, check_dimensions, judge, probes, special_probes
from .lengths import Outcome, check_batches, check_lengths

TIMEOUT = 120.0  # seconds per request


class EndpointError(GemmaNPError):
    """The server could not be asked, or its answer is not embeddings. `status`: the HTTP status when the server
    answered with an error, else None."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _post(url: str, payload: dict, timeout: float) -> object:
    body = json.dumps(payload).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode("utf-8", "replace")
        raise EndpointError(f"{url}: the server answered HTTP {e.code} {e.reason}: {detail}", e.code) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise EndpointError(f"{url}: no answer within {timeout:g} s; is the server busy or loading? Raise "
                                "--timeout") from None
        raise EndpointError(f"{url}: cannot reach the server ({reason}); is it running, and is the URL its "
                            "base address (e.g. http://localhost:8080)?") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise EndpointError(f"{url}: the answer is not JSON: {raw[:200]!r}") from None


def endpoint_url(url: str, api: str) -> str:
    """The URL the requests go to: the base URL plus the API's path, unless the path is already there."""
    path = {"openai": "/v1/embeddings", "tei": "/embed"}[api]
    url = url.rstrip("/")
    if url.endswith(path) or (api == "openai" and url.endswith("/embeddings")):
        return url
    return url + path


def _vector(x, where: str) -> np.ndarray:
    if not isinstance(x, list) or not all(v is None or isinstance(v, (int, float)) for v in x):
        raise EndpointError(f"{where}: expected a list of numbers, got {type(x).__name__}")
    return np.array([math.nan if v is None else v for v in x], dtype=np.float64)


def fetch(url: str, api: str, texts: list[str], kind: str, model_name: str | None, dimensions: int | None,
          timeout: float = TIMEOUT) -> list[np.ndarray]:
    """The server's vector for each text (prompted already for openai; by prompt_name for tei)."""
    target = endpoint_url(url, api)
    if api == "openai":
        payload = {"input": texts, "model": model_name or "google/embeddinggemma-300m", "encoding_format": "float"}
        if dimensions is not None:
            payload["dimensions"] = dimensions
        answer = _post(target, payload, timeout)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != len(texts):
            raise EndpointError(f"{target}: expected {{'data': [{len(texts)} embeddings]}}, got "
                                f"{json.dumps(answer)[:200]}")
        if all(isinstance(d, dict) and isinstance(d.get("index"), int) for d in data):
            data = sorted(data, key=lambda d: d["index"])
        return [_vector(d.get("embedding") if isinstance(d, dict) else None, f"{target}: data[{i}].embedding")
                for i, d in enumerate(data)]
    payload = {"inputs": texts, "prompt_name": kind, "normalize": True, "truncate": True}
    if dimensions is not None:
        payload["dimensions"] = dimensions
    answer = _post(target, payload, timeout)
    if not isinstance(answer, list) or len(answer) != len(texts):
        raise EndpointError(f"{target}: expected a list of {len(texts)} embeddings, got {json.dumps(answer)[:200]}")
    return [_vector(v, f"{target}: embedding {i}") for i, v in enumerate(answer)]


def check(model, url: str, api: str = "openai", model_name: str | None = None, dimensions: int | None = None,
          min_cosine: float = MIN_COSINE, timeout: float = TIMEOUT) -> tuple[list[Finding], list[str]]:
    """Ask the server for every probe's vector and judge it: (per-text findings, diagnoses).

    Every probe goes once alone (one text per request: the vectors judged against gemma_np) and once with the
    others in one request (openai: all texts; tei: one request per prompt name), and each text's two vectors are
    compared: a server whose vectors move with their neighbours is named. No diagnoses: it matches gemma_np.
    """
    if api not in ("openai", "tei"):
        raise ValueError(f"api must be 'openai' or 'tei', got {api!r}")
    check_dimensions(model, dimensions)
    items = probes(model) + special_probes(model)
    sent = [p.prompt + p.text if api == "openai" else p.text for p in items]
    alone = [fetch(url, api, [t], p.kind, model_name, dimensions, timeout)[0] for p, t in zip(items, sent)]
    together: list[np.ndarray | None] = [None] * len(items)
    groups = [None] if api == "openai" else ["query", "document"]  # openai: prompts are written, kinds can mix
    for kind in groups:
        index = [i for i, p in enumerate(items) if kind is None or p.kind == kind]
        vectors = fetch(url, api, [sent[i] for i in index], kind or "document", model_name, dimensions, timeout)
        for i, v in zip(index, vectors):
            together[i] = v
    return judge(model, items, alone, dimensions, min_cosine, api=api, together=together)


def check_more(model, url: str, api: str = "openai", model_name: str | None = None, dimensions: int | None = None,
               min_cosine: float = MIN_COSINE, timeout: float = TIMEOUT, lengths: bool = False,
               batches: bool = False) -> list[Outcome]:
    """The length probes (--lengths: 2048, 2049, 3000 tokens, the truncation bisected) and the batch probes
    (--batches: two equal-length documents, a short one with a long one) of gemma_np.verify.runtimes.lengths.
    A request the server answers with an HTTP error is an outcome to judge there; any other failure raises."""
    check_dimensions(model, dimensions)

    def send(items: list[Probe]) -> list[np.ndarray] | str:
        texts = [p.prompt + p.text if api == "openai" else p.text for p in items]
        try:
            return fetch(url, api, texts, "document", model_name, dimensions, timeout)
        except EndpointError as e:
            if e.status is None:
                raise
            return str(e)

    out = []
    if lengths:
        out.append(check_lengths(model, send, dimensions, min_cosine))
    if batches:
        out.append(check_batches(model, send, dimensions, min_cosine, api))
    return out
