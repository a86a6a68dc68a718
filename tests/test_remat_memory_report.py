"""The live-range simulation of experiments/remat_memory_report.py
(`prospr_jax.benchmark.remat_live_buffers`), on a hand-written scheduled HLO."""

from prospr_jax.benchmark import remat_live_buffers

HLO = """HloModule m, is_scheduled=true

ENTRY %main (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  %a = f32[256]{0} fusion(%p), calls=%f, metadata={op_name="jit(_prospr)/jit(k_step_loss)/a"}
  %b = f32[512]{0} fusion(%a), kind=kLoop, calls=%f
  %t = (f32[256]{0}, f32[512]{0}) tuple(%a, %b)
  %w = (f32[256]{0}, f32[512]{0}) while(%t), condition=%cond, body=%body
  %g = f32[256]{0} get-tuple-element(%w), index=0
  %c = f32[128]{0} fusion(%g), kind=kLoop, calls=%f
  %d = f32[64]{0} bitcast(%c)
  ROOT %r = f32[4]{0} fusion(%d), kind=kLoop, calls=%f
}
"""


def test_peak_is_where_the_two_largest_results_overlap():
  peak, live = remat_live_buffers.live_at_peak(HLO)
  assert peak == 4 * (256 + 512)
  assert sorted((b.instruction, b.size, b.shape) for b in live) == [
      ("a", 1024, "f32[256]"), ("b", 2048, "f32[512]")]
  assert [b.op_name for b in live if b.instruction == "a"] == ["jit(_prospr)/jit(k_step_loss)/a"]


def test_aliases_extend_the_lives_of_what_they_alias():
  # `b` dies at the loop; `a` lives on through the loop's element 0 until `c` reads it, and `c`
  # through its bitcast until `r`: without the aliases the peak would be smaller.
  hlo = HLO.replace("f32[512]", "f32[8]")
  peak, live = remat_live_buffers.live_at_peak(hlo)
  assert peak == 4 * (256 + 128)
  assert sorted(b.instruction for b in live) == ["a", "c"]
