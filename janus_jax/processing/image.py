"""Host-side image pre/post-processing with PIL, as the shipped Janus `VLMImageProcessor`.

Understanding: RGB -> long side to `image_size` (int truncation, min 14) with PIL bicubic (what torchvision's
`resize(BICUBIC, antialias=True)` does for PIL input) -> centre-pad to a square with (127, 127, 127) ->
/255 -> (x - 0.5) / 0.5. Images are NHWC float32 in [-1, 1], the project's image layout.
Like the official loader, EXIF orientation is not applied.
"""
from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np
from PIL import Image

from janus_jax import paths

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]

BACKGROUND = (127, 127, 127)  # tuple(int(0.5 * 255) for _ in range(3)), from the shipped image_mean.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ACCEPTED_ARRAYS = "uint8 or uint16 arrays of shape [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] with H, W > 0"


# ------------------------------------------------------------------------------------------------
# Loading and colour conversion.
# ------------------------------------------------------------------------------------------------


def _check_size(width: int, height: int, what: str) -> None:
  if width <= 0 or height <= 0:
    raise ValueError(f"{what} has size {width}x{height} (WxH); images must be at least 1x1.")


def _sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
  """Scales 0..65535 to 0..255 (rounding x / 257, so 8-bit values stored as x * 257 come back exactly)."""
  values = np.clip(values.astype(np.float64), 0, 65535)
  return np.round(values / 257.0).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
  """An 8-bit RGB copy of `img`.

  Like the official `load_pil_images`, every mode goes through `img.convert("RGB")`: alpha (RGBA, LA, PA)
  is dropped, not composited, palette transparency is ignored, and CMYK uses PIL's conversion. The
  exception is 16-bit greyscale (modes I;16* and I, taken as 0..65535), which is scaled to 0..255
  instead of PIL's clipping.
  """
  _check_size(img.width, img.height, "Image")
  if img.mode == "RGB":
    return img.copy()
  if img.mode in _SIXTEEN_BIT_MODES:
    grey = _sixteen_bit_to_uint8(np.asarray(img))
    return Image.fromarray(grey, "L").convert("RGB")
  try:
    return img.convert("RGB")
  except (ValueError, OSError) as e:
    raise ValueError(f"Cannot convert image of mode {img.mode!r} to RGB: {e}") from e


def _array_to_pil(array: np.ndarray) -> Image.Image:
  """`uint8|uint16[H, W(, C)]` (C in 1, 3, 4) -> PIL image of mode L / RGB / RGBA."""
  shape = tuple(array.shape)
  ok_shape = array.ndim == 2 or (array.ndim == 3 and shape[2] in (1, 3, 4))
  if not ok_shape or array.dtype not in (np.uint8, np.uint16) or 0 in shape:
    raise ValueError(f"Got an image array of shape {shape} and dtype {array.dtype}; accepted: {_ACCEPTED_ARRAYS}.")
  if array.dtype == np.uint16:
    array = _sixteen_bit_to_uint8(array)
  if array.ndim == 3 and shape[2] == 1:
    array = array[:, :, 0]
  mode = {2: "L", 3: "RGB", 4: "RGBA"}[array.ndim if array.ndim == 2 else shape[2]]
  return Image.fromarray(np.ascontiguousarray(array), mode)


def _open_file(path: str) -> Image.Image:
  """The image at `path` (local or remote, e.g. `gs://`), decoded from its file object."""
  file = paths.resolve(path)
  if not file.is_file():
    raise FileNotFoundError(f"Image file '{path}' does not exist (or is not a file).")
  try:
    with file.open("rb") as f, Image.open(f) as img:
      img.load()
      return img.copy()
  except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError, ...).
    raise ValueError(f"Cannot read image file '{path}': {type(e).__name__}: {e}") from e


def load_image(image: ImageLike) -> Image.Image:
  """An RGB PIL image from a file path (local or remote), a PIL image or a `uint8[H, W(, C)]` array (see
  `to_rgb`)."""
  if isinstance(image, (str, os.PathLike)):
    path = os.fspath(image)
    img = _open_file(path)
    if img.width <= 0 or img.height <= 0:
      raise ValueError(f"Image file '{path}' has size {img.width}x{img.height}; images must be at least 1x1.")
    return to_rgb(img)
  if isinstance(image, Image.Image):
    return to_rgb(image)
  if isinstance(image, np.ndarray):
    return to_rgb(_array_to_pil(image))
  raise TypeError(
      f"Cannot load an image from {type(image).__name__}; pass a path, a PIL image or {_ACCEPTED_ARRAYS}.")


# ------------------------------------------------------------------------------------------------
# Geometry.
# ------------------------------------------------------------------------------------------------


def long_side_size(width: int, height: int, image_size: int = 384, min_size: int = 14) -> tuple[int, int]:
  """`(new_height, new_width)` with the official rule: `max(int(side / long * image_size), min_size)`."""
  _check_size(width, height, "Image")
  long = max(width, height)
  return (max(int(height / long * image_size), min_size), max(int(width / long * image_size), min_size))


def resize_long_side(img: Image.Image, image_size: int = 384, min_size: int = 14) -> Image.Image:
  """Resizes the long side to `image_size` (int truncation, sides >= min_size), PIL bicubic.

  PIL's bicubic widens its kernel when downscaling, i.e. it is antialiased, which is exactly what
  torchvision's `resize(..., BICUBIC, antialias=True)` does for PIL input in the official code.
  """
  new_h, new_w = long_side_size(img.width, img.height, image_size, min_size)
  return img.resize((new_w, new_h), Image.Resampling.BICUBIC)


def expand_to_square(img: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
  """Pads to a square of the long side, pasting `img` at offset `(long - short) // 2` on `background`."""
  width, height = img.size
  if width == height:
    return img
  side = max(width, height)
  out = Image.new(img.mode, (side, side), background)
  out.paste(img, ((side - width) // 2, (side - height) // 2))
  return out


def resize_short_side_and_crop(img: Image.Image, image_size: int = 384) -> Image.Image:
  """Short side to `image_size` (PIL bicubic, long side rounded), then a centre crop to a square.

  The crop offset is `(side - image_size) // 2`. This is the papers' training-time recipe for
  generation images (no padding).
  """
  _check_size(img.width, img.height, "Image")
  scale = image_size / min(img.width, img.height)
  new_w = max(image_size, int(round(img.width * scale)))
  new_h = max(image_size, int(round(img.height * scale)))
  img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
  left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
  return img.crop((left, top, left + image_size, top + image_size))


# ------------------------------------------------------------------------------------------------
# Value range.
# ------------------------------------------------------------------------------------------------


def normalize(pixels: np.ndarray) -> np.ndarray:
  """`uint8[..., 3]` -> `float32[..., 3]` in [-1, 1]: rescale by 1/255 (float64, as HF) then (x - 0.5) / 0.5."""
  x = (pixels.astype(np.float64) * (1.0 / 255.0)).astype(np.float32)
  half = np.float32(0.5)
  return (x - half) / half


ROUNDINGS = ("truncate", "round")


def to_uint8(images, rounding: str = "truncate", xp=np):
  """`float[..., 3]` in [-1, 1] -> `uint8[..., 3]`: `clip((x + 1) / 2 * 255, 0, 255)`, then `rounding`:
  'truncate' (the official Janus post-processing: float32 assigned into a uint8 array) or 'round' (to nearest, ties
  to even; JanusFlow's). NaN maps to 0. `xp`: numpy, or jax.numpy inside a compiled decoder (the generation modes'
  `pixel_rounding` picks the rule)."""
  if rounding not in ROUNDINGS:
    raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}.")
  x = xp.nan_to_num(xp.asarray(images, xp.float32), nan=-1.0)
  x = xp.clip((x + 1) / 2 * 255, 0, 255)
  return (xp.round(x) if rounding == "round" else x).astype(xp.uint8)


# ------------------------------------------------------------------------------------------------
# Pipelines.
# ------------------------------------------------------------------------------------------------


def _as_list(images) -> list:
  if isinstance(images, (str, os.PathLike, Image.Image)):
    return [images]
  if isinstance(images, np.ndarray):
    return list(images) if images.ndim == 4 else [images]
  return list(images)


def understanding_pixels(
    image: ImageLike,
    image_size: int = 384,
    min_size: int = 14,
    background: tuple[int, int, int] = BACKGROUND,
) -> np.ndarray:
  """One image -> `uint8[image_size, image_size, 3]` (resized and padded, before normalisation)."""
  img = resize_long_side(load_image(image), image_size, min_size)
  return np.asarray(expand_to_square(img, background), np.uint8)


def preprocess_understanding(
    images: ImageLike | Sequence[ImageLike],
    image_size: int = 384,
    min_size: int = 14,
    background: tuple[int, int, int] = BACKGROUND,
) -> np.ndarray:
  """Images (one, a list, or `uint8[N, H, W, C]`) -> `float32[N, image_size, image_size, 3]` in [-1, 1]."""
  items = _as_list(images)
  if not items:
    return np.zeros((0, image_size, image_size, 3), np.float32)
  pixels = np.stack([understanding_pixels(x, image_size, min_size, background) for x in items])
  return normalize(pixels)


def preprocess_generation(image: ImageLike, image_size: int = 384) -> np.ndarray:
  """One image -> `float32[image_size, image_size, 3]` in [-1, 1]: short side resize + centre crop."""
  img = resize_short_side_and_crop(load_image(image), image_size)
  return normalize(np.asarray(img, np.uint8))


def image_grid(images: np.ndarray, cols: int | None = None) -> np.ndarray:
  """uint8[N, H, W, C] -> one uint8[rows * H, cols * W, C] grid image (row-major, black filler; cols ~ sqrt(N))."""
  n, h, w, c = images.shape
  cols = cols or int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / cols))
  grid = np.zeros((rows * h, cols * w, c), np.uint8)
  for i, img in enumerate(images):
    r, q = divmod(i, cols)
    grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = img
  return grid
