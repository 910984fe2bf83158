#!/usr/bin/env node
// Classify PNG/JPEG files with Axon's axon.v1.Classifier API from Node.js.
//
//   node classify.mjs [--address HOST:PORT] [--model NAME] [--top-k K] [--timeout-ms MS]
//                     [--tls] [--tls-ca PEM] [--tls-cert PEM --tls-key PEM]
//                     [--tls-server-name NAME] [--token-file FILE] FILE...
//
// The service definition is read from the repository's proto/ folder at run time (no generated
// code to keep in step). Prints one JSON object per file on stdout; on a gRPC error prints
// "axon-node: CODE: message" on stderr and exits 1, on a usage error exits 2.
//
// Security, as the Python client's options (axon classify): --tls checks the server's
// certificate against the system's CAs, --tls-ca against the given ones (any --tls-* option
// implies --tls); --tls-cert and --tls-key answer a server that requires client certificates
// (mutual TLS); --tls-server-name is the name the certificate must carry when the address does
// not. A bearer token from --token-file (or the AXON_TOKEN variable) goes with the call as
// "authorization: Bearer <token>"; it is never printed.
import { readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const PROTO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "proto");

// grpc-js passes the address as the TLS server name (SNI) even when it is an IP address, which
// Node reports on stderr as deprecated (DEP0123). The certificate is still checked against that
// address (or --tls-server-name); the warning holds nothing a caller can act on.
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = (warning, ...rest) => {
  if (!rest.includes("DEP0123")) emitWarning(warning, ...rest);
};

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

const USAGE = "usage: classify.mjs [--address HOST:PORT] [--model NAME] [--top-k K] " +
  "[--timeout-ms MS] [--tls] [--tls-ca PEM] [--tls-cert PEM --tls-key PEM] " +
  "[--tls-server-name NAME] [--token-file FILE (or env AXON_TOKEN)] FILE...";
const LOOPBACK = ["127.", "localhost", "[::1]", "::1"];

function usage(message) {
  process.stderr.write(`axon-node: ${message}\n${USAGE}\n`);
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
        tls: { type: "boolean", default: false },
        "tls-ca": { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "tls-server-name": { type: "string" },
        "token-file": { type: "string" },
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

function readOption(what, path) {
  try {
    return readFileSync(path);
  } catch (error) {
    usage(`cannot read the ${what} ${path}: ${error.code === "ENOENT" ? "no such file" : error.message}`);
  }
}

// Channel credentials, channel options and call metadata, as the Python client's
// ConnectionSecurity builds them.
function security(options) {
  const ca = options["tls-ca"], cert = options["tls-cert"], key = options["tls-key"];
  const serverName = options["tls-server-name"];
  if ((cert === undefined) !== (key === undefined)) {
    usage("a client certificate needs its private key, and the other way round");
  }
  const tls = options.tls || [ca, cert, key, serverName].some((v) => v !== undefined);
  let token = process.env.AXON_TOKEN || undefined;
  if (options["token-file"] !== undefined) {
    token = readOption("token file", options["token-file"]).toString("ascii").trim();
  }
  // The token itself never goes into a message: a wrong one is someone's secret.
  if (token !== undefined && !/^[\x21-\x7e]+$/.test(token)) {
    usage("a token is printable ASCII with no spaces, and not empty");
  }
  const credentials = tls
    ? grpc.credentials.createSsl(ca === undefined ? null : readOption("CA certificate", ca),
      key === undefined ? null : readOption("client key", key),
      cert === undefined ? null : readOption("client certificate", cert))
    : grpc.credentials.createInsecure();
  const channelOptions = serverName ? { "grpc.ssl_target_name_override": serverName } : {};
  const metadata = new grpc.Metadata();
  if (token) {
    metadata.set("authorization", `Bearer ${token}`);
    const hosts = options.address.split(",").map((host) => host.trim());
    if (!tls && !hosts.every((host) => LOOPBACK.some((prefix) => host.startsWith(prefix)))) {
      process.stderr.write(`axon-node: warning: sending a bearer token to ${options.address} ` +
        "without TLS: anyone on the path can read it\n");
    }
  }
  return { credentials, channelOptions, metadata };
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
  const { credentials, channelOptions, metadata } = security(options);
  const Classifier = loadClassifier();
  const client = new Classifier(options.address, credentials, channelOptions);
  const request = { model_name: options.model, images, top_k: options.topK };
  const deadline = new Date(Date.now() + options.timeoutMs);
  client.Classify(request, metadata, { deadline }, (error, response) => {
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
