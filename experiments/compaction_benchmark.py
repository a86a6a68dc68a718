r"""What channel pruning buys after compaction: params, FLOPs and inference time vs. dense.

  python experiments/compaction_benchmark.py                      # vgg16 + resnet20, ~2 min on CPU
  python experiments/compaction_benchmark.py --models=vgg11 --sparsities=0.5 --repeats=3
  python experiments/compaction_benchmark.py --method=snip --output=/tmp/compaction.json

For each model and each channel sparsity, channel-group masks are built with
`structured_prune` (`--method`), the masked model is compacted, and printed side by side with
the dense model: params, MACs, XLA flops and the jitted eval-mode forward time of a
`[--batch_size, 32, 32, 3]` random batch (median over `--repeats` interleaved runs), and the
largest |logit difference| between the compacted and the masked model. What each column
measures, and why the VGG time ratios on CPU fall far below their MAC ratios:
`prospr_jax.benchmark.compaction_suite`. --output holds a 'compaction' result record
(`prospr_jax.benchmark.result_record`) whose 'rows' are the table's rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from prospr_jax import structured
from prospr_jax.benchmark import compaction_suite, result_record, setting_flags

_MODELS = flags.DEFINE_list("models", ["vgg16", "resnet20"], "Names for models.get_model.")
_SPARSITIES = flags.DEFINE_list("sparsities", ["0.3", "0.5", "0.7"], "Channel sparsities.")
_METHOD = flags.DEFINE_string("method", "random", f"One of {structured.structured_methods()}.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size of the timed forward pass.")
_REPEATS = setting_flags.define_repeats_flag()
_OUTPUT = setting_flags.define_output_flag()
_COMPILE_CACHE_DIR = setting_flags.define_compile_cache_flag()


def main(argv: Sequence[str]) -> None:
  setting_flags.begin(argv, _COMPILE_CACHE_DIR)
  config = {"models": _MODELS.value, "sparsities": [float(s) for s in _SPARSITIES.value],
            "method": _METHOD.value, "batch_size": _BATCH_SIZE.value, "repeats": _REPEATS.value,
            "input_shape": list(compaction_suite.INPUT_SHAPE)}
  record = result_record.new_record("compaction", config, rows=[])
  print(compaction_suite.format_title(record))
  print(compaction_suite.HEADER)
  for name in config["models"]:
    rows = compaction_suite.benchmark_model(name, config["sparsities"], config["method"],
                                            config["batch_size"], config["repeats"])
    for row in rows:
      print(compaction_suite.format_row(row), flush=True)
    record["rows"] += rows
  if _OUTPUT.value:
    result_record.write_json(_OUTPUT.value, record)


if __name__ == "__main__":
  app.run(main)
