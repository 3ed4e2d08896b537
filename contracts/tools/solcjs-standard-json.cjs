#!/usr/bin/env node
// Makes the npm `solc` package (solcjs) behave like the native `solc --standard-json`, so that
// py-solc-x can drive it where native compiler binaries cannot be downloaded. The npm CLI prints a
// notice line before its JSON, which breaks py-solc-x; this wrapper prints only the JSON.
// Imports are resolved by the caller, which inlines every imported source into the input.
"use strict";
const solc = require("solc");

const args = process.argv.slice(2);
if (args.includes("--version")) {
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
  process.exit(0);
}
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => { process.stdout.write(solc.compile(input)); });
