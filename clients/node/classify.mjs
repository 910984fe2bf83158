#!/usr/bin/env node
// Classify PNG/JPEG files with Axon's axon.v1.Classifier API from Node.js.
//
//   node classify.mjs [--address HOST:PORT] [--model NAME] [--top-k K] [--timeout-ms MS] FILE...
//
// The service definition is read from the repository's proto/ folder at run time (no generated
// code to keep in step). Prints one JSON object per file on stdout; on a gRPC error prints
// "axon-node: CODE: message" on stderr and exits 1, on a usage error exits 2.
import { readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const PROTO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "proto");

function loadClassifier() {
  const definition = protoLoader.loadSync("axon/protocol/v1/classification.proto", {
    includeDirs: [PROTO_ROOT],
    // Field names as written in the .proto (model_name, top_k), bytes as Buffers, and
    // uint32/float values as plain numbers.
    keepCase: true,
    longs: Number,
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition).axon.v1.Classifier;
}

function usage(message) {
  process.stderr.write(`axon-node: ${message}\n` +
    "usage: classify.mjs [--address HOST:PORT] [--model NAME] [--top-k K] " +
    "[--timeout-ms MS] FILE...\n");
  process.exit(2);
}

function parse() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        address: { type: "string", default: process.env.AXON_SERVER ?? "127.0.0.1:8001" },
        model: { type: "string", default: "" },
        "top-k": { type: "string", default: "1" },
        "timeout-ms": { type: "string", default: "30000" },
      },
    });
  } catch (error) {
    usage(error.message);
  }
  const { values, positionals } = parsed;
  const topK = Number(values["top-k"]);
  const timeoutMs = Number(values["timeout-ms"]);
  if (!Number.isInteger(topK) || topK < 1) usage(`--top-k must be a positive integer`);
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) usage(`--timeout-ms must be positive`);
  if (positionals.length === 0) usage("name at least one image file");
  return { ...values, topK, timeoutMs, files: positionals };
}

function readImages(files) {
  return files.map((file) => {
    try {
      return { encoded: readFileSync(file) };
    } catch (error) {
      usage(`${file}: ${error.code === "ENOENT" ? "no such file" : error.message}`);
    }
  });
}

function main() {
  const options = parse();
  const images = readImages(options.files);
  const Classifier = loadClassifier();
  const client = new Classifier(options.address, grpc.credentials.createInsecure());
  const request = { model_name: options.model, images, top_k: options.topK };
  const deadline = new Date(Date.now() + options.timeoutMs);
  client.Classify(request, { deadline }, (error, response) => {
    client.close();
    if (error) {
      const code = Object.keys(grpc.status).find((name) => grpc.status[name] === error.code);
      process.stderr.write(`axon-node: ${code ?? error.code}: ${error.details}\n`);
      process.exit(1);
    }
    response.results.forEach((result, i) => {
      process.stdout.write(JSON.stringify({
        image: basename(options.files[i]),
        model: response.model_name,
        version: response.model_version,
        classes: result.classes.map((c) => ({
          index: c.index, label: c.label, probability: c.probability,
        })),
      }) + "\n");
    });
  });
}

main();
