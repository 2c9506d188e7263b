// Embed the probes of `gemma-np probes export` with Transformers.js and write the vectors for
// `gemma-np verify --vectors`. Untested end to end in gemma-np's CI (no ONNX export there): see docs/runtimes.md.
//
//   npm install @huggingface/transformers
//   gemma-np probes export --out probes.json
//   node examples/transformersjs_embed.mjs probes.json vectors.json ./embeddinggemma-300m-ONNX [fp32|q8|q4]
//   gemma-np verify --vectors vectors.json
//
// MODEL_DIR is a local folder holding an ONNX export of EmbeddingGemma (config.json, tokenizer files,
// onnx/model.onnx ...), such as a download of onnx-community/embeddinggemma-300m-ONNX. Nothing is fetched.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { AutoModel, AutoTokenizer, env } from "@huggingface/transformers";

const [probesFile, outFile, modelDir, dtype = "fp32"] = process.argv.slice(2);
if (!probesFile || !outFile || !modelDir) {
  console.error("usage: node transformersjs_embed.mjs PROBES.json VECTORS.json MODEL_DIR [fp32|q8|q4]");
  process.exit(2);
}

// Load from the local folder only: its parent is the model path, its name the model id.
env.allowRemoteModels = false;
env.localModelPath = path.dirname(path.resolve(modelDir)) + path.sep;
const modelId = path.basename(path.resolve(modelDir));
const tokenizer = await AutoTokenizer.from_pretrained(modelId);
const model = await AutoModel.from_pretrained(modelId, { dtype });

const { probes, dimensions } = JSON.parse(readFileSync(probesFile, "utf8"));
const embeddings = [];
for (const probe of probes) {
  // The input is prompt + text already: add no prompt. Not pipeline("feature-extraction"): it mean-pools the
  // token states and skips the Dense layers. The model's own output sentence_embedding is the embedding.
  const inputs = await tokenizer([probe.input], { padding: true });
  const ids = inputs.input_ids.tolist()[0].map(Number);  // int64: BigInt in JavaScript
  if (ids.length !== probe.token_ids.length || ids.some((x, i) => x !== probe.token_ids[i])) {
    console.error(`${probe.name}: the tokenizer's ids differ from the exported token_ids (a tokenizer problem)`);
  }
  const { sentence_embedding } = await model(inputs);
  let v = sentence_embedding.tolist()[0];
  if (dimensions < v.length) {  // Matryoshka: the first K coordinates, normalized again
    v = v.slice(0, dimensions);
    const norm = Math.hypot(...v);
    v = v.map((x) => x / norm);
  }
  embeddings.push(v);
  console.error(`${probe.name}: ${probe.token_ids.length} tokens`);
}
writeFileSync(outFile, JSON.stringify({ embeddings }));  // NaN becomes null; verify reads it as NaN
console.error(`wrote ${embeddings.length} vectors to ${outFile}`);
