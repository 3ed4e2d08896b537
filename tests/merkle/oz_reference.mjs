// Reference answers from @openzeppelin/merkle-tree (OpenZeppelin's JS StandardMerkleTree) for
// tests/merkle/test_standard_tree.py. Run from the repository root: node tests/merkle/oz_reference.mjs
//
// stdin:  JSON list of cases
//           {"leafEncoding": [...], "values": [[...], ...], "proofs": [index, ...] | "all",
//            "valueProofs": [index, ...]}   (optional: proofs looked up by the values at those indices)
// stdout: JSON list of results
//           {"root": hex, "proofs": {index: [hex, ...]}, "valueProofs": {index: [hex, ...]},
//            "dump": <tree.dump()>, "verified": <every proof passed StandardMerkleTree.verify>}
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const cases = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const results = cases.map(({ leafEncoding, values, proofs, valueProofs = [] }) => {
  const tree = StandardMerkleTree.of(values, leafEncoding);
  const indices = proofs === "all" ? values.map((_, i) => i) : proofs;
  const byIndex = {};
  const byValue = {};
  let verified = true;
  for (const i of indices) {
    byIndex[i] = tree.getProof(i);
    verified &&= StandardMerkleTree.verify(tree.root, leafEncoding, values[i], byIndex[i]);
  }
  for (const i of valueProofs) {
    byValue[i] = tree.getProof(values[i]);
  }
  return { root: tree.root, proofs: byIndex, valueProofs: byValue, dump: tree.dump(), verified };
});
process.stdout.write(JSON.stringify(results));
