"""`sampling.text_to_image.sample_images` on params in the training layout (scanned layers, remat) and unrolled."""
import dataclasses

import jax
import numpy as np
import pytest

from janus_jax.api import JanusPipeline
from janus_jax.configs import models
from janus_jax.models import param_layout
from janus_jax.models.configs import JanusConfig
from janus_jax.models.janus import init_params
from janus_jax.processing.tokenizer import load_tokenizer
from janus_jax.sampling import ar_image, flow_image, text_to_image
from tiny_assets import make_tiny_tokenizer

REMAT = "dots_with_no_batch_dims_saveable"
PROMPTS = ["a red circle", "two green triangles left of a blue square"]


@pytest.fixture(scope="module", autouse=True)
def fresh_loop_caches():
  """The compiled loops are cached per model, i.e. per config: drop ours so that other modules using the tiny
  config (test_janus_parity counts its executables) start from empty caches."""
  yield
  for fn in (ar_image._compiled_generate, ar_image.compiled_decode, flow_image._compiled,
             flow_image.compiled_decode_latents):
    fn.cache_clear()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  return load_tokenizer(make_tiny_tokenizer(str(tmp_path_factory.mktemp("tok"))))


def _with(cfg: JanusConfig, *, scan: bool, remat: str) -> JanusConfig:
  return dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, scan_layers=scan, remat_policy=remat),
                             vision=dataclasses.replace(cfg.vision, remat_policy=remat))


@pytest.mark.parametrize("family", ["janus", "janusflow"])
def test_training_layouts_sample_like_the_plain_model(family, tokenizer):
  base = JanusConfig.from_dict(models.janus_tiny() if family == "janus" else models.janusflow_tiny())
  scanned_cfg = _with(base, scan=True, remat="none")
  scanned = init_params(scanned_cfg, jax.random.PRNGKey(0))
  unrolled, unrolled_cfg = param_layout.for_decoding(scanned, scanned_cfg)
  reference = text_to_image.sample_images(unrolled, unrolled_cfg, tokenizer, "deepseek", PROMPTS, seed=3)
  size = base.generated_image_size
  assert reference.shape == (2, size, size, 3) and reference.dtype == np.uint8
  for params, cfg in [(scanned, _with(base, scan=True, remat=REMAT)), (unrolled, _with(base, scan=False, remat=REMAT)),
                      (scanned, scanned_cfg)]:
    np.testing.assert_array_equal(text_to_image.sample_images(params, cfg, tokenizer, "deepseek", PROMPTS, seed=3),
                                  reference)
  # The pipeline runs the same code; the default guidance weight is the mode's (5 AR, 2 flow).
  pipe = JanusPipeline(scanned, _with(base, scan=True, remat=REMAT), tokenizer, "deepseek")
  assert pipe.cfg.llm.remat_policy == "none" and pipe.cfg.vision.remat_policy == "none"
  np.testing.assert_array_equal(pipe.generate(PROMPTS, seed=3).images, reference)
  weight = 5.0 if family == "janus" else 2.0
  np.testing.assert_array_equal(
      text_to_image.sample_images(scanned, scanned_cfg, tokenizer, "deepseek", PROMPTS, cfg_weight=weight, seed=3),
      reference)


def test_for_decoding_turns_remat_off_when_already_unrolled():
  cfg = _with(JanusConfig.from_dict(models.janus_tiny()), scan=False, remat=REMAT)
  params = {"language_model": {"model": {}}}
  out, dec = param_layout.for_decoding(params, cfg)
  assert out is params and not dec.llm.scan_layers
  assert dec.llm.remat_policy == "none" and dec.vision.remat_policy == "none"


def test_sample_images_checks_its_arguments(tokenizer):
  cfg = _with(JanusConfig.from_dict(models.janus_tiny()), scan=False, remat="none")  # checked before any params use
  with pytest.raises(ValueError, match="cfg_weight"):
    text_to_image.sample_images({}, cfg, tokenizer, "deepseek", PROMPTS, cfg_weight=-1.0)
  with pytest.raises(ValueError, match="cfg_weight=0"):
    text_to_image.sample_images({}, cfg, tokenizer, "deepseek", ["  "])
