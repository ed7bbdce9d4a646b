"""python -m rlhf.evaluate: each metric on fixed inputs, the statistics against hand-computed values, the toy text
alignment, missing models named while the rest of the table comes out, and the image cache."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rlhf.evaluate.metrics import (AestheticScore, ClipCosine, HiddenTaste, Judged, LearnedReward, PromptFollowing,
                                   score)
from rlhf.evaluate.stats import bootstrap_indices, cosine, mean_interval, paired_comparison, win_outcomes
from rlhf.evaluate.text_alignment import (AnalyserCaptioner, ClipTextEmbedder, TextAlignment, pool, pooling_mode)
from rlhf.models import ModelLoadError
from rlhf.paths import TOY_PIPELINE
from rlhf.toy.world import Scene, draw

SCENES = [Scene("circle", "red", "white", "large", 1, "top"), Scene("square", "blue", "yellow", "large", 1, "left"),
          Scene("triangle", "green", "black", "small", 3)]


@pytest.fixture(scope="module")
def clip():
    from rlhf.models import load_clip

    return load_clip()


@pytest.fixture(scope="module")
def drawings():
    """Three toy drawings with their own captions: (images, prompts)."""
    return np.stack([draw(s, seed=i).image for i, s in enumerate(SCENES)]), [s.caption() for s in SCENES]


# ----------------------------------------------------------------------------- statistics
def test_cosine_of_fixed_vectors_is_the_hand_computed_value():
    got = cosine(np.array([[1.0, 0.0], [2.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 1.0], [1.0, 1.0], [4.0, 3.0]]))
    assert np.allclose(got, [1 / np.sqrt(2), 1.0, 24 / 25])


def test_bootstrap_interval_of_two_values_spans_them():
    """Resamples of (0, 1) have mean 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4: the 2.5% and 97.5% points are
    0 and 1."""
    stats = mean_interval(np.array([0.0, 1.0]), bootstrap_indices(2, 4000))
    assert (stats["mean"], stats["low"], stats["high"], stats["n"]) == (0.5, 0.0, 1.0, 2)


def test_bootstrap_interval_of_a_constant_is_that_constant():
    stats = mean_interval(np.full(7, 0.25), bootstrap_indices(7))
    assert stats["low"] == stats["mean"] == stats["high"] == 0.25


def test_bootstrap_interval_matches_normal_theory_on_a_large_sample():
    values = np.random.default_rng(1).normal(size=2000)
    stats = mean_interval(values, bootstrap_indices(2000, 2000))
    expected = 2 * 1.96 * values.std(ddof=1) / np.sqrt(2000)
    assert stats["high"] - stats["low"] == pytest.approx(expected, rel=0.1)
    assert stats["low"] < values.mean() < stats["high"]


def test_win_rate_counts_a_tie_as_half():
    assert win_outcomes([1, 2, 3, 5], [0, 2, 4, 5]).tolist() == [1.0, 0.5, 0.0, 0.5]
    result = paired_comparison(np.array([1.0, 2, 3, 5]), np.array([0.0, 2, 4, 5]), bootstrap_indices(4))
    assert result["win_rate"] == 0.5 and result["delta"] == 0.0


def test_paired_comparison_of_a_constant_shift_has_no_spread():
    base = np.random.default_rng(0).normal(size=50)
    result = paired_comparison(base + 0.1, base, bootstrap_indices(50))
    assert result["win_rate"] == result["win_low"] == result["win_high"] == 1.0
    assert result["delta_low"] == pytest.approx(0.1) and result["delta_high"] == pytest.approx(0.1)


def test_bootstrap_refuses_an_empty_sample():
    with pytest.raises(ValueError, match="at least one unit"):
        bootstrap_indices(0)


# ----------------------------------------------------------------------------- metrics
def test_clip_score_metric_is_the_cosine_of_the_clip_embeddings(clip, drawings):
    images, prompts = drawings
    with torch.inference_mode():
        x = torch.stack([clip.preprocess(Image.fromarray(im)) for im in images])
        img = torch.nn.functional.normalize(clip.model.encode_image(x), dim=-1)
        txt = torch.nn.functional.normalize(clip.model.encode_text(clip.tokenizer(prompts)), dim=-1)
    by_hand = (img * txt).sum(-1).numpy()
    assert np.allclose(ClipCosine(clip)(Judged(images, prompts)), by_hand, atol=1e-5)


def test_aesthetic_metric_on_a_head_built_by_hand(clip, drawings, tmp_path):
    """A head whose layers pass one projection through: score = 2 * (v . e) + 1 for the unit image embedding e."""
    from rlhf.ddpo.rewards import Aesthetic, AestheticHead

    images, prompts = drawings
    dim = clip.model.visual.output_dim
    v = torch.linspace(-1, 1, dim)
    head = AestheticHead(dim)
    with torch.no_grad():
        for layer in head.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_(), layer.bias.zero_()
                layer.weight[0, 0] = 1.0
        head.layers[0].weight[0] = v
        head.layers[-1].weight[0, 0], head.layers[-1].bias[0] = 2.0, 1.0
    torch.save(head.state_dict(), tmp_path / "head.pth")
    e = clip.embed_images(list(images))
    metric = AestheticScore(Aesthetic(clip, tmp_path / "head.pth"))
    assert np.allclose(metric(Judged(images, prompts)), (2 * (e @ v) + 1).numpy(), atol=1e-5)


def test_learned_reward_metric_is_the_reward_models_ensemble_mean(clip, drawings):
    from reward_models.ensemble import RewardModel, RewardModelConfig, fit_ensemble
    from reward_models.features import FeatureSpec, backbone_name
    from reward_models.heads import HeadConfig
    from rlhf.toy.world import dataset

    spec = FeatureSpec(backbone_name(clip))
    pairs = dataset(24, seed=3)
    emb = clip.embed_images([d.image for d in pairs]).numpy()
    txt = clip.embed_texts([d.scene.caption() for d in pairs]).numpy()
    fa, fb = spec(emb[:12], txt[:12]), spec(emb[12:], txt[:12])
    reds = np.array([d.scene.colour == "red" for d in pairs], np.float32)
    ensemble = fit_ensemble(fa, fb, np.clip(0.5 + reds[:12] - reds[12:], 0.1, 0.9), RewardModelConfig(HeadConfig(epochs=20), k=2))
    rm = RewardModel(clip, ensemble, spec, {})
    images, prompts = drawings
    mean, std = rm.score(images, prompts)
    judged = Judged(images, prompts)
    assert np.allclose(LearnedReward(rm)(judged), mean, atol=1e-5)
    assert np.allclose(LearnedReward(rm, "std")(judged), std, atol=1e-5)


def test_hpsv2_metric_is_what_the_hpsv2_reward_gives(drawings, preference_clip):
    from rlhf.ddpo.rewards import HPSv2
    from rlhf.evaluate.metrics import reward_metric

    images, prompts = drawings
    hps = HPSv2(*preference_clip)
    metric = reward_metric("hpsv2", hps)
    assert metric.title == "HPSv2"
    assert np.allclose(metric(Judged(images, prompts)), hps(images, prompts, [{}] * 3)[0], atol=1e-5)


def test_prompt_following_and_tastes_read_the_shared_analyses(drawings):
    from rlhf.toy.tastes import TASTES

    images, prompts = drawings
    judged = Judged(images, prompts)
    assert np.allclose(PromptFollowing()(judged), TASTES["faithful"].score(list(images), prompts))
    assert np.allclose(HiddenTaste("striped")(judged), TASTES["striped"].score(list(images), prompts))
    assert PromptFollowing()(Judged(images[:1], ["A red colored car."])) is None


def test_score_refuses_a_metric_with_the_wrong_number_of_scores(drawings):
    class Short:
        name, title = "short", "short"

        def __call__(self, judged):
            return np.zeros(len(judged) - 1)

    with pytest.raises(ValueError, match="one finite score per image"):
        score(Judged(*drawings), [Short()])


def test_round_metrics_keep_their_keys_and_means(clip, drawings):
    """The rounds' eval.json keys (what report.py and the dashboard read), computed through the shared metrics."""
    from rlhf.ddpo.rewards import ClipScore
    from rlhf.round.evaluate import metrics
    from rlhf.toy.tastes import TASTES

    images, prompts = drawings
    got = metrics(images, prompts, scorers={"clip_score": ClipScore(clip)}, taste="striped")
    assert list(got) == ["images", "prompt_following", "clip_score", "hidden_score"]
    assert got["images"] == 3
    assert got["clip_score"] == pytest.approx(float(ClipScore(clip)(images, prompts, [{}] * 3)[0].mean()), abs=1e-6)
    assert got["hidden_score"] == pytest.approx(float(TASTES["striped"].score(list(images), prompts).mean()), abs=1e-6)


# ----------------------------------------------------------------------------- text alignment
def test_pooling_by_hand():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]],
                           [[0.0, 1.0], [2.0, -1.0], [4.0, 3.0]]])  # (B=2, T=3, D=2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 4.0], [2.0, 1.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 6.0], [4.0, 3.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0], [0.0, 1.0]]
    assert pool(hidden, mask, "lasttoken").tolist() == [[3.0, 6.0], [4.0, 3.0]]


def test_pooling_mode_reads_a_sentence_transformers_config():
    assert pooling_mode({"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}) == "mean"
    assert pooling_mode({"pooling_mode": "cls"}) == "cls"
    with pytest.raises(ModelLoadError, match="weightedmean"):
        pooling_mode({"pooling_mode_weightedmean_tokens": True})


def test_toy_text_alignment_scores_a_matching_caption_above_a_wrong_one(clip, drawings):
    images, captions = drawings
    alignment = TextAlignment(AnalyserCaptioner(), ClipTextEmbedder(clip), "toy_text_alignment")
    wrong = [captions[(i + 1) % len(captions)] for i in range(len(captions))]
    matching = alignment(Judged(images, captions))
    assert alignment.captions == captions  # the analyser reads clean drawings back exactly
    assert np.allclose(matching, 1.0, atol=1e-5)
    assert (matching > alignment(Judged(images, wrong))).all()


@pytest.fixture(scope="module")
def tiny_text_models(tmp_path_factory):
    """A sentence-transformers folder (BERT, mean pooling) and a BLIP captioning folder, both tiny and with random
    weights: they exercise the real loaders and calls offline, not caption quality. (sentence folder, BLIP folder)"""
    from transformers import (BertConfig, BertModel, BertTokenizer, BlipConfig, BlipForConditionalGeneration,
                              BlipImageProcessor, BlipProcessor)

    root = tmp_path_factory.mktemp("text_models")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square", "on", "white",
             "background", "large", "small", "left"]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(str(root / "vocab.txt"))
    torch.manual_seed(0)
    sentence = root / "sentence"
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(sentence)
    tokenizer.save_pretrained(sentence)
    (sentence / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (sentence / "1_Pooling").mkdir()
    (sentence / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    blip = root / "blip"
    text = dict(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=32, encoder_hidden_size=16, bos_token_id=2, sep_token_id=3, pad_token_id=0)
    vision = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=32,
                  patch_size=8)
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(blip)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(blip)
    return sentence, blip


def test_sentence_encoder_pools_a_transformers_model_by_its_config(tiny_text_models):
    from transformers import AutoModel, AutoTokenizer

    from rlhf.evaluate.text_alignment import SentenceEncoder

    sentence, _ = tiny_text_models
    texts = ["a red circle", "a large blue square on the left on a white background"]
    encoder = SentenceEncoder(sentence)
    tokens = AutoTokenizer.from_pretrained(sentence)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(sentence)(**tokens).last_hidden_state
    m = tokens["attention_mask"].unsqueeze(-1).float()
    by_hand = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1).numpy()
    assert encoder.pooling == "mean" and np.allclose(encoder(texts), by_hand, atol=1e-6)


def test_image_to_text_captions_each_image_through_transformers(tiny_text_models, drawings):
    from rlhf.evaluate.text_alignment import ImageToText

    captions = ImageToText(tiny_text_models[1])(Judged(*drawings))
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)


def test_a_missing_text_model_is_one_line_naming_it():
    from rlhf.evaluate.text_alignment import SentenceEncoder

    with pytest.raises(ModelLoadError) as e:
        SentenceEncoder("nobody-here/no-such-sentence-model")
    assert "no-such-sentence-model" in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def zero_lora(tmp_path_factory):
    """A LoRA on the toy UNet as peft initialises it (B = 0): it draws exactly the base's images, so every
    comparison with the base is a tie."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from rlhf.models import load_pipeline

    folder = tmp_path_factory.mktemp("lora")
    unet = load_pipeline().unet
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian", target_modules=["to_q", "to_v"]))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=convert_state_dict_to_diffusers(
        get_peft_model_state_dict(unet)))
    return folder


def evaluate(tmp_path, *extra):
    from rlhf.evaluate.__main__ import main

    return main(["--model", str(TOY_PIPELINE), "--prompts", "toy_eval", "--limit", "3", "--seeds", "2", "--steps", "2",
                 "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--tastes", "striped",
                 "--resamples", "200", *extra])


@pytest.mark.slow
def test_the_table_comes_out_with_missing_models_named_and_a_rerun_draws_nothing(tmp_path, zero_lora,
                                                                                   preference_clip, capsys):
    weights, arch = preference_clip
    first = evaluate(tmp_path, "--lora", str(zero_lora), "--hpsv2-weights", str(weights), "--hpsv2-arch", arch,
                     "--compare-to", "paper")
    metrics = first["metrics"]
    assert first["timing"]["images_drawn"] == 12 and first["units"] == 6
    for name in ("aesthetic", "text_alignment"):
        assert metrics[name]["status"] == "absent" and "\n" not in metrics[name]["reason"]
    assert "--aesthetic-weights" in metrics["aesthetic"]["reason"]
    assert "blip-image-captioning-base" in metrics["text_alignment"]["reason"]
    assert metrics["learned_reward"]["status"] == "absent" and "--reward-model" in metrics["learned_reward"]["reason"]
    for name in ("hpsv2", "clip_score", "prompt_following", "taste:striped", "toy_text_alignment"):
        assert metrics[name]["status"] == "computed", name
        assert metrics[name]["vs_base"][f"lora {zero_lora}"]["win_rate"] == 0.5  # the same images: every unit ties
    printed = capsys.readouterr().out
    assert "SD 1.5 DDPO (published) | 5.67 | 0.2673 | 0.6024" in printed and "Not computed:" in printed
    out = tmp_path / "out"
    assert json.loads((out / "results.json").read_text())["metrics"] == json.loads(json.dumps(metrics))
    assert (out / "results.md").read_text().startswith("# Evaluation on toy_eval") and (out / "grid-all-prompts.png").is_file()
    second = evaluate(tmp_path, "--lora", str(zero_lora), "--hpsv2-weights", str(weights), "--hpsv2-arch", arch)
    assert second["timing"]["images_drawn"] == 0
    assert second["metrics"]["clip_score"]["by_model"] == metrics["clip_score"]["by_model"]


@pytest.mark.slow
def test_text_alignment_runs_through_the_real_loaders_by_folder(tmp_path, tiny_text_models):
    sentence, blip = tiny_text_models
    result = evaluate(tmp_path, "--captioner", str(blip), "--sentence-model", str(sentence))
    stats = result["metrics"]["text_alignment"]
    assert stats["status"] == "computed" and -1 <= stats["by_model"]["base"]["mean"] <= 1


@pytest.mark.slow
def test_drawbench_categories_each_get_a_table(tmp_path):
    """One prompt per DrawBench category, one seed, one step: 11 categories, and prompt following named as not
    applying to them."""
    from rlhf.evaluate.__main__ import main

    result = main(["--model", str(TOY_PIPELINE), "--limit", "1", "--seeds", "1", "--steps", "1", "--resamples", "100",
                   "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    assert len(result["per_category"]) == 11 and result["prompts"]["categories"]["Colors"] == 1
    assert result["metrics"]["prompt_following"]["status"] == "not applicable"
    assert "clip_score" in result["per_category"]["Counting"]["metrics"]
    assert len(result["grids"]) == 11


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0", "--model", "x"], "--seeds 0: use at least 1"),
    (["--eta", "0", "--model", "x"], "--eta 0.0: use eta > 0"),
    ([], "nothing to evaluate"),
    (["--model", "data/models/no-such-pipeline"], "no pipeline folder"),
    (["--prompts", "no_such_set", "--model", "x"], "unknown prompt file type"),
    (["--lora", "no/such/lora", "--model", str(TOY_PIPELINE)], "--lora no/such/lora: no such folder"),
    (["--tastes", "sour", "--model", str(TOY_PIPELINE)], "unknown taste 'sour'"),
])
def test_bad_input_is_one_line_before_any_work(argv, message, tmp_path, capsys):
    from rlhf.evaluate.__main__ import main

    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_a_folder_without_a_label_store_is_not_a_run(tmp_path):
    from rlhf.evaluate.__main__ import main

    with pytest.raises(SystemExit, match="no labels.db there"):
        main(["--rounds", str(tmp_path), "--out", str(tmp_path / "out")])
