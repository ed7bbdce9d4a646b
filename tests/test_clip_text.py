import open_clip
import torch

from rlhf.models import load_clip, load_pipeline
from rlhf.toy.clip_text import clip_text_encoder
from rlhf.toy.tokenizer import build_clip_tokenizer

CAPTIONS = ["a large red circle on the left on a white background", "three small blue squares on a black background", ""]


def test_converted_text_tower_computes_what_open_clip_computes():
    model = load_clip().model
    encoder = clip_text_encoder(model)
    ours = encoder(build_clip_tokenizer(32)(CAPTIONS, padding="max_length", max_length=32, return_tensors="pt").input_ids)
    tokens = open_clip.SimpleTokenizer(context_length=32)(CAPTIONS)  # pads with 0 where CLIPTokenizer pads with EOS
    with torch.no_grad():
        x = model.ln_final(model.transformer(model.token_embedding(tokens) + model.positional_embedding, attn_mask=model.attn_mask))
        torch.testing.assert_close(ours.pooler_output @ model.text_projection, model.encode_text(tokens))
    for row, n in enumerate((tokens != 0).sum(1).tolist()):  # the causal mask keeps padding out of every real token
        torch.testing.assert_close(ours.last_hidden_state[row, :n], x[row, :n])


def test_toy_pipeline_text_encoder_is_the_toy_clip_text_tower():
    pipe, converted = load_pipeline(), clip_text_encoder(load_clip().model)
    theirs = converted.state_dict()
    for name, weight in pipe.text_encoder.state_dict().items():
        assert torch.equal(weight, theirs[name]), name
