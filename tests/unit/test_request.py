import pytest

from openwan.configs.tasks import TASKS, get_task, infer_task, parse_size
from openwan.pipelines.request import GenerationRequest, RequestError


def test_defaults_follow_the_official_task_table():
    r = GenerationRequest(prompt="  a cat  ").resolve(get_task("t2v-A14B"))
    assert r.prompt == "a cat"
    assert (r.steps, r.shift, r.solver, r.frame_num) == (40, 12.0, "unipc", 81)
    assert r.guide_scale == (3.0, 4.0)  # (low-noise, high-noise)
    assert r.size == (1280, 720)
    assert r.negative_prompt.startswith("色调艳丽")
    r5 = GenerationRequest(prompt="x", seed=7).resolve(get_task("ti2v-5B"))
    assert (r5.frame_num, r5.size, r5.seed) == (121, (1280, 704), 7)
    assert TASKS["ti2v-5B"].fps == 24 and TASKS["t2v-1.3B"].fps == 16


def test_scalar_guide_scale_is_duplicated_and_random_seed_drawn():
    r = GenerationRequest(prompt="x", guide_scale=6, seed=-1).resolve(get_task("t2v-1.3B"))
    assert r.guide_scale == (6.0, 6.0)
    assert r.seed >= 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"frame_num": 80}, r"4n\+1.*try 77 or 81"),
        ({"frame_num": 0}, r"4n\+1"),
        ({"size": (1280, 720)}, r"not supported by t2v-1.3B; supported: 480\*832, 832\*480"),
        ({"solver": "ddim"}, r"unknown solver 'ddim'"),
        ({"steps": 0}, r"steps must be >= 1"),
        ({"shift": 0.0}, r"shift must be > 0"),
    ],
)
def test_bad_requests_say_what_to_do(kwargs, match):
    with pytest.raises(RequestError, match=match):
        GenerationRequest(prompt="a cat", **kwargs).resolve(get_task("t2v-1.3B"))


def test_empty_prompt_is_refused():
    with pytest.raises(RequestError, match="prompt is empty"):
        GenerationRequest(prompt="   ").resolve(get_task("t2v-1.3B"))


def test_t2i_needs_one_frame_and_allows_square():
    spec = get_task("t2i-14B")
    r = GenerationRequest(prompt="x", size=(1024, 1024)).resolve(spec)
    assert r.frame_num == 1
    with pytest.raises(RequestError, match="single image"):
        GenerationRequest(prompt="x", frame_num=5).resolve(spec)


def test_custom_task_checks_divisibility_only():
    spec = infer_task(get_task("t2v-1.3B").dit.replace(num_layers=2), get_task("t2v-1.3B").vae)
    assert spec.name == "custom"
    assert GenerationRequest(prompt="x", size=(64, 48)).resolve(spec).size == (64, 48)
    with pytest.raises(RequestError, match="multiples of 16"):
        GenerationRequest(prompt="x", size=(64, 40)).resolve(spec)


def test_infer_task_recognises_official_configs():
    for name in ("t2v-1.3B", "t2v-14B", "ti2v-5B"):
        spec = get_task(name)
        assert infer_task(spec.dit, spec.vae).name == name
    a14 = get_task("t2v-A14B")
    assert infer_task(a14.dit, a14.vae, has_experts=True).name == "t2v-A14B"


def test_a_retrained_tiny_model_is_recognised_whatever_its_latent_statistics():
    import json

    from openwan.assets import tiny_model_dir
    from openwan.checkpoint.vae_format import config_from_diffusers
    from openwan.configs.tasks import TINY_DIT, TINY_VAE

    retrained = TINY_VAE.replace(latent_mean=(0.5,) * 16, latent_std=(2.0,) * 16)
    assert infer_task(TINY_DIT, retrained).name == "t2v-tiny"
    assert infer_task(TINY_DIT, TINY_VAE.replace(dim=8, dec_dim=8)).name == "custom"
    shipped = json.loads((tiny_model_dir() / "vae" / "config.json").read_text())
    assert config_from_diffusers(shipped).latent_std != TINY_VAE.latent_std  # measured stats
    assert infer_task(TINY_DIT, config_from_diffusers(shipped)).name == "t2v-tiny"


def test_parse_size_and_unknown_task():
    assert parse_size("832*480") == (832, 480)
    with pytest.raises(ValueError, match="WIDTH\\*HEIGHT"):
        parse_size("832-480")
    with pytest.raises(ValueError, match="unknown task 't2v-2B'"):
        get_task("t2v-2B")
