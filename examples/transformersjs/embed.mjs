// Embed the probes of `gemma-np probes export` with Transformers.js (Node) and write the vectors for
// `gemma-np verify vectors`. Tested by gemma-np's tests/test_transformersjs.py on the export of
// `python -m weights_tools.onnx_export`.
//
//   cd examples/transformersjs && npm ci --ignore-scripts     # or npm install --ignore-scripts
//   gemma-np probes export --out probes.json
//   node examples/transformersjs/embed.mjs probes.json vectors.json MODEL_DIR [fp32|q8] [--batch] [--pipeline]
//   gemma-np verify vectors vectors.json
//
// MODEL_DIR is a local folder holding an ONNX export of EmbeddingGemma: config.json, the tokenizer files and
// onnx/model.onnx (fp32) or onnx/model_quantized.onnx (q8). Nothing is fetched (env.allowRemoteModels = false).
//
// The embedding is the model's own output `sentence_embedding`: the export holds the mean pooling, the two Dense
// layers and the normalization. --pipeline instead does what many guides show, pipeline('feature-extraction')
// with mean pooling and normalization: it pools the token states (last_hidden_state) and so skips the Dense
// layers; verify vectors names that fault ("Dense layers skipped"). --batch runs every probe in one padded
// batch instead of one at a time.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { AutoModel, AutoTokenizer, env, pipeline } from "@huggingface/transformers";

const flags = process.argv.slice(2).filter((a) => a.startsWith("--"));
const [probesFile, outFile, modelDir, dtype = "fp32"] = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const unknown = flags.filter((f) => !["--batch", "--pipeline"].includes(f));
if (!probesFile || !outFile || !modelDir || unknown.length || !["fp32", "q8", "fp16", "q4"].includes(dtype)) {
  console.error("usage: node embed.mjs PROBES.json VECTORS.json MODEL_DIR [fp32|q8] [--batch] [--pipeline]"
    + (unknown.length ? `\nunknown option: ${unknown.join(" ")}` : ""));
  process.exit(2);
}
const batch = flags.includes("--batch");
const usePipeline = flags.includes("--pipeline");

// Load from the local folder only: its parent is the model path, its name the model id.
env.allowRemoteModels = false;
env.localModelPath = path.dirname(path.resolve(modelDir)) + path.sep;
const modelId = path.basename(path.resolve(modelDir));

const { probes, dimensions } = JSON.parse(readFileSync(probesFile, "utf8"));
const inputs = probes.map((p) => p.input); // prompt + text already: add no prompt
const started = Date.now();
let rows;
if (usePipeline) {
  const extractor = await pipeline("feature-extraction", modelId, { dtype });
  const groups = batch ? [inputs] : inputs.map((x) => [x]);
  rows = [];
  for (const group of groups) {
    rows.push(...(await extractor(group, { pooling: "mean", normalize: true })).tolist());
  }
} else {
  const tokenizer = await AutoTokenizer.from_pretrained(modelId);
  const model = await AutoModel.from_pretrained(modelId, { dtype });
  rows = [];
  const groups = batch ? [probes] : probes.map((p) => [p]);
  for (const group of groups) {
    const encoded = await tokenizer(group.map((p) => p.input), { padding: true });
    const ids = encoded.input_ids.tolist(); // int64: BigInt in JavaScript
    const mask = encoded.attention_mask.tolist();
    group.forEach((p, i) => {
      const mine = ids[i].map(Number).filter((_, j) => Number(mask[i][j]) === 1); // padding left out
      if (mine.length !== p.token_ids.length || mine.some((x, j) => x !== p.token_ids[j])) {
        console.error(`${p.name}: the tokenizer's ids differ from the exported token_ids (a tokenizer problem)`);
      }
    });
    const { sentence_embedding } = await model(encoded);
    rows.push(...sentence_embedding.tolist());
  }
}
const embeddings = rows.map((v) => {
  if (dimensions < v.length) { // Matryoshka: the first K coordinates, normalized again
    v = v.slice(0, dimensions);
    const norm = Math.hypot(...v);
    v = v.map((x) => x / norm);
  }
  return v;
});
writeFileSync(outFile, JSON.stringify({ embeddings })); // NaN becomes null; verify reads it as NaN
console.error(`wrote ${embeddings.length} vectors (${dtype}${usePipeline ? ", feature-extraction pipeline" : ""}`
  + `${batch ? ", one padded batch" : ""}) to ${outFile} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
