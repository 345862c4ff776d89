"""Host-side processing: tokenizers, chat templates and batching, image pre/post-processing."""
from janus_jax.processing.chat import (DEFAULT_SYSTEM_PROMPT, NUM_IMAGE_TOKENS, TEMPLATES, ChatTemplate,
                                       batch_left_pad, expand_image_placeholders, format_conversation,
                                       generation_prompt, get_template, image_placeholders, left_pad_masks,
                                       prepare_generation_batch, prepare_understanding_batch,
                                       unconditional_ids, understanding_prompt)
from janus_jax.processing.image import (BACKGROUND, expand_to_square, load_image, long_side_size, normalize,
                                        preprocess_generation, preprocess_understanding, resize_long_side,
                                        resize_short_side_and_crop, to_rgb, to_uint8, understanding_pixels)
from janus_jax.processing.tokenizer import (BEGIN_OF_GENERATION, BEGIN_OF_IMAGE, BOS_TOKEN, END_OF_IMAGE,
                                            EOS_TOKEN, IMAGE_PLACEHOLDER, JANUS_SPECIAL_TOKENS, PAD_TOKEN,
                                            HFTokenizer, SentencePieceTokenizer, SpecialTokens, Tokenizer,
                                            load_tokenizer, train_sentencepiece)

__all__ = [
    "BACKGROUND", "BEGIN_OF_GENERATION", "BEGIN_OF_IMAGE", "BOS_TOKEN", "ChatTemplate", "DEFAULT_SYSTEM_PROMPT",
    "END_OF_IMAGE", "EOS_TOKEN", "HFTokenizer", "IMAGE_PLACEHOLDER", "JANUS_SPECIAL_TOKENS", "NUM_IMAGE_TOKENS",
    "PAD_TOKEN", "SentencePieceTokenizer", "SpecialTokens", "TEMPLATES", "Tokenizer", "batch_left_pad",
    "expand_image_placeholders", "expand_to_square", "format_conversation", "generation_prompt",
    "get_template", "image_placeholders", "left_pad_masks", "load_image", "load_tokenizer", "long_side_size",
    "normalize", "prepare_generation_batch", "prepare_understanding_batch", "preprocess_generation",
    "preprocess_understanding", "resize_long_side", "resize_short_side_and_crop", "to_rgb", "to_uint8",
    "train_sentencepiece", "unconditional_ids", "understanding_pixels", "understanding_prompt",
]
