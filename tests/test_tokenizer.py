import open_clip
import pytest

from rlhf.toy.tokenizer import build_clip_tokenizer


@pytest.mark.parametrize(
    "text",
    ["a small red triangle on a blue background", "three purple squares on a gray background", "A photo of an astronaut riding a horse, 4k!"],
)
def test_toy_tokenizer_gives_open_clip_ids(text):
    ours = build_clip_tokenizer(77)(text).input_ids
    theirs = open_clip.get_tokenizer("ViT-B-32")([text])[0].tolist()
    assert ours == theirs[: len(ours)] and set(theirs[len(ours) :]) == {0}
    assert ours[0] == 49406 and ours[-1] == 49407


def test_toy_tokenizer_pads_to_its_max_length():
    ids = build_clip_tokenizer(32)(["a red circle"], padding="max_length", return_tensors="pt").input_ids
    assert ids.shape == (1, 32) and ids[0, -1].item() == 49407
