#!/usr/bin/env python3
"""Compares the evaluation runner's GGUF dequantization with an independent decoder (gguf-py).

usage: tools/check-gguf-dequant.py MODEL.gguf DUMP_BINARY [--all] [--no-synthetic]

DUMP_BINARY is build/bench/eval/gguf-tensor-dump. For every K-quant tensor (Q2_K..Q6_K) of MODEL,
and the first 8 tensors of each other type the runner decodes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F32,
F16, BF16; all of them with --all), rows are dumped with DUMP_BINARY (all rows of tensors with at
most 16 rows, else the first 4, 4 from the middle and the last 4) and compared bit for bit with
gguf.quants.dequantize on the same rows. Block types the model lacks are then checked on a
synthetic GGUF of random blocks (finite random fp16 scales), written to a temporary directory,
unless --no-synthetic is given.

Prints one line per tensor type (tensors and values compared) and exits 1 on any mismatch, 2 on
bad usage or when gguf/numpy cannot be imported. Needs the `gguf` and `numpy` packages:
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install gguf numpy
"""

import argparse
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import dequantize
except ImportError as e:  # pragma: no cover - depends on the environment
    print(f"check-gguf-dequant: cannot import the gguf-py decoder ({e}).\n"
          "Install it into a virtual environment and run this script with that python:\n"
          "    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install gguf numpy\n"
          "    /tmp/venv/bin/python tools/check-gguf-dequant.py MODEL.gguf DUMP_BINARY", file=sys.stderr)
    sys.exit(2)

K_QUANTS = [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
LEGACY = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0]
PLAIN = [Q.F32, Q.F16, Q.BF16]
SUPPORTED = K_QUANTS + LEGACY + PLAIN

# Byte offsets of the fp16 fields (d, dmin, m) inside one block, kept finite in synthetic data.
HALF_FIELDS = {
    Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
    Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
}


class Tally:
    def __init__(self):
        self.tensors = {}
        self.values = {}
        self.failures = 0

    def add(self, key, values):
        self.tensors[key] = self.tensors.get(key, 0) + 1
        self.values[key] = self.values.get(key, 0) + values


def row_ranges(total):
    """[first, count) ranges of rows to compare: everything when small, else head, middle, tail."""
    if total <= 16:
        return [(0, total)]
    mid = total // 2 - 2
    return [(0, 4), (mid, 4), (total - 4, 4)]


def run_dump(binary, model, name, first, rows, out):
    proc = subprocess.run([binary, model, name, str(first), str(rows), out], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{binary} failed on '{name}' rows {first}+{rows} (exit {proc.returncode}): "
                           f"{proc.stderr.strip()}")
    return np.fromfile(out, dtype="<f4")


def compare_tensor(binary, model, tensor, tmp):
    """Returns (values compared, list of mismatch messages)."""
    ne0 = int(tensor.shape[0])
    qtype = Q(tensor.tensor_type)
    if qtype in PLAIN:
        data = tensor.data.reshape(-1, ne0)
    else:
        data = tensor.data.reshape(-1, tensor.data.shape[-1])
    compared, problems = 0, []
    out = os.path.join(tmp, "rows.f32")
    for first, rows in row_ranges(data.shape[0]):
        ours = run_dump(binary, model, tensor.name, first, rows, out)
        want = np.ascontiguousarray(dequantize(data[first:first + rows], qtype), dtype=np.float32).reshape(-1)
        compared += want.size
        if ours.size != want.size:
            problems.append(f"'{tensor.name}' rows {first}+{rows}: {ours.size} values dumped, {want.size} expected")
            continue
        if np.array_equal(ours.view(np.uint32), want.view(np.uint32)):
            continue
        differ = ours.view(np.uint32) != want.view(np.uint32)
        diff = np.abs(ours.astype(np.float64) - want.astype(np.float64))
        first_bad = int(np.argmax(differ))
        kind = "bit patterns differ (+0/-0 or NaN only)" if np.array_equal(ours, want) else "values differ"
        problems.append(f"'{tensor.name}' rows {first}+{rows}: {kind} in {int(differ.sum())} of {want.size} values, "
                        f"max abs difference {np.nanmax(diff):.9g}; first at flat index {first_bad}: "
                        f"ours {float(ours[first_bad])!r}, gguf-py {float(want[first_bad])!r}")
    return compared, problems


def check_file(binary, model, tmp, label, tally, limit=None):
    """Compares the tensors of one file; `limit` caps the tensors per non-K-quant type."""
    reader = gguf.GGUFReader(model)
    skipped = {}
    for tensor in reader.tensors:
        qtype = Q(tensor.tensor_type)
        if qtype not in SUPPORTED:
            skipped[qtype.name] = skipped.get(qtype.name, 0) + 1
            continue
        if limit is not None and qtype not in K_QUANTS and tally.tensors.get((label, qtype), 0) >= limit:
            continue
        compared, problems = compare_tensor(binary, model, tensor, tmp)
        tally.add((label, qtype), compared)
        for p in problems:
            print(f"MISMATCH {label} {qtype.name}: {p}")
        tally.failures += len(problems)
    return skipped


def write_synthetic(path, types, rng):
    """A GGUF file with two random tensors (8 rows of 512 values, 3 rows of 256) per block type."""
    writer = gguf.GGUFWriter(path, "synthetic")
    for qtype in types:
        block_values, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        for rows, cols in ((8, 512), (3, 256)):
            n_blocks = rows * cols // block_values
            blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
            halves = rng.integers(0, 1 << 16, size=(n_blocks, len(HALF_FIELDS[qtype])), dtype=np.uint16)
            exp_all_ones = (halves & 0x7C00) == 0x7C00  # inf/NaN: make the exponent 30 instead
            halves[exp_all_ones] &= np.uint16(0xFBFF)
            for k, off in enumerate(HALF_FIELDS[qtype]):
                blocks[:, off] = (halves[:, k] & 0xFF).astype(np.uint8)
                blocks[:, off + 1] = (halves[:, k] >> 8).astype(np.uint8)
            writer.add_tensor(f"synthetic.{qtype.name.lower()}.{rows}x{cols}",
                              blocks.reshape(rows, cols // block_values * block_bytes), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="a GGUF model file")
    ap.add_argument("dump_binary", help="the gguf-tensor-dump executable")
    ap.add_argument("--all", action="store_true",
                    help="compare every tensor, not only the first 8 of each non-K-quant type")
    ap.add_argument("--no-synthetic", action="store_true",
                    help="do not check the block types the model lacks on random synthetic blocks")
    args = ap.parse_args()
    for path, what in ((args.model, "model"), (args.dump_binary, "dump binary")):
        if not os.path.isfile(path):
            print(f"check-gguf-dequant: {what} '{path}' does not exist", file=sys.stderr)
            return 2
    binary = os.path.abspath(args.dump_binary)

    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="check-gguf-dequant-") as tmp:
        try:
            skipped = check_file(binary, args.model, tmp, "model", tally, None if args.all else 8)
            present = {q for (_, q) in tally.tensors}
            missing = [q for q in K_QUANTS + LEGACY if q not in present]
            if missing and not args.no_synthetic:
                synthetic = os.path.join(tmp, "synthetic.gguf")
                write_synthetic(synthetic, missing, np.random.default_rng(20240601))
                check_file(binary, synthetic, tmp, "synthetic", tally)
        except RuntimeError as e:
            print(f"check-gguf-dequant: {e}", file=sys.stderr)
            return 1

    print(f"model {os.path.basename(args.model)}:")
    for (label, qtype) in sorted(tally.tensors, key=lambda k: (k[0] != "model", k[1].value)):
        print(f"  {label:9} {qtype.name:5}: {tally.tensors[(label, qtype)]:3} tensors, "
              f"{tally.values[(label, qtype)]:8} values compared")
    for name, count in sorted(skipped.items()):
        print(f"  model     {name:5}: {count:3} tensors not compared (type not decoded by the runner)")
    if tally.failures:
        print(f"FAILED: {tally.failures} mismatching row ranges")
        return 1
    print("OK: all values bit-identical to gguf-py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
