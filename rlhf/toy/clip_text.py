"""The toy CLIP's text tower as a transformers ``CLIPTextModel``: the toy pipeline's frozen text encoder.

SD 1.5 conditions its UNet on OpenAI CLIP's text tower, frozen. The toy pipeline does the same with the toy
CLIP's: a contrastively trained tower tells "on the left" from "on the right", which a text encoder trained with
the tiny UNet on denoising alone barely does. Both models are the same pre-LayerNorm transformer with a causal
mask, so the conversion only renames and splits weights.
"""
from __future__ import annotations

import torch
from transformers import CLIPTextConfig, CLIPTextModel

from rlhf.toy.tokenizer import EOS_ID


def clip_text_encoder(model) -> CLIPTextModel:
    """An open_clip ``CLIP`` model's text tower, with its weights, as a ``CLIPTextModel`` (fp32).

    ``last_hidden_state`` equals open_clip's token features after ``ln_final`` at every position up to the end
    token, and ``pooler_output @ model.text_projection`` equals ``model.encode_text``.
    """
    if getattr(model, "text_pool_type", "argmax") != "argmax" or not hasattr(model, "transformer"):
        raise ValueError("only open_clip CLIP models with a causal, argmax-pooled text tower convert to CLIPTextModel")
    sd = {k: v.float() for k, v in model.state_dict().items() if not k.startswith("visual")}
    blocks = model.transformer.resblocks
    width = sd["token_embedding.weight"].shape[1]
    config = CLIPTextConfig(
        vocab_size=sd["token_embedding.weight"].shape[0],
        hidden_size=width,
        intermediate_size=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=len(blocks),
        num_attention_heads=blocks[0].attn.num_heads,
        max_position_embeddings=sd["positional_embedding"].shape[0],
        projection_dim=sd["text_projection"].shape[1],
        hidden_act="quick_gelu" if type(blocks[0].mlp.gelu).__name__ == "QuickGELU" else "gelu",
        layer_norm_eps=blocks[0].ln_1.eps,
        bos_token_id=EOS_ID - 1,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )
    out = {
        "embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "embeddings.position_embedding.weight": sd["positional_embedding"],
        "final_layer_norm.weight": sd["ln_final.weight"],
        "final_layer_norm.bias": sd["ln_final.bias"],
    }
    for i in range(len(blocks)):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for part in ("weight", "bias"):
            q, k, v = sd[src + f"attn.in_proj_{part}"].chunk(3)
            out |= {
                dst + f"self_attn.q_proj.{part}": q,
                dst + f"self_attn.k_proj.{part}": k,
                dst + f"self_attn.v_proj.{part}": v,
                dst + f"self_attn.out_proj.{part}": sd[src + f"attn.out_proj.{part}"],
                dst + f"layer_norm1.{part}": sd[src + f"ln_1.{part}"],
                dst + f"layer_norm2.{part}": sd[src + f"ln_2.{part}"],
                dst + f"mlp.fc1.{part}": sd[src + f"mlp.c_fc.{part}"],
                dst + f"mlp.fc2.{part}": sd[src + f"mlp.c_proj.{part}"],
            }
    encoder = CLIPTextModel(config)
    encoder.load_state_dict(out, strict=True)
    return encoder.eval().requires_grad_(False).to(torch.float32)
