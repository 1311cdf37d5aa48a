"""Recipes: typed validation, overrides, and every shipped recipe loads."""

from pathlib import Path

import pytest
import yaml

from sfv.config import Recipe, load_recipe
from sfv.sections import save_recipe
from sfv.errors import InputError


def test_shipped_recipes_load_and_round_trip(tmp_path):
    from sfv.decoder_train import load_decoder_recipe

    paths = sorted(Path("recipes").glob("*.yaml"))
    assert {p.name for p in paths} >= {"tiny_cpu.yaml", "svd_14f_768x448.yaml", "svd_xt_25f_1024x576.yaml", "decoder_toy.yaml"}
    for path in paths:
        if path.name.startswith("decoder_"):  # sfv distill-decoder's recipes
            recipe = load_decoder_recipe(path)
            (tmp_path / "d.yaml").write_text(yaml.safe_dump(recipe.to_dict()))
            assert load_decoder_recipe(tmp_path / "d.yaml") == recipe
            continue
        recipe = load_recipe(path)
        save_recipe(recipe, tmp_path / "r.yaml")
        assert load_recipe(tmp_path / "r.yaml") == recipe
    paper = load_recipe("recipes/svd_14f_768x448.yaml")
    # the paper's G learning rate, betas and EMA; D's learning rate is twice the paper's 1e-4 (the toy default's, the header)
    assert (paper.generator.lr, paper.discriminator.lr, paper.generator.betas, paper.generator.ema) == (1e-5, 2e-4, (0.5, 0.999), 0.95)
    assert (paper.data.frames, paper.data.height, paper.data.width, paper.train.batch_size) == (14, 448, 768, 32)


def test_overrides_are_typed():
    r = load_recipe(None, ["train.total_videos=64", "generator.betas=[0.0, 0.99]", "data.cache=null", "discriminator.blocks=[0, 1]"])
    assert r.train.total_videos == 64 and r.generator.betas == (0.0, 0.99) and r.discriminator.blocks == [0, 1]
    assert isinstance(Recipe().generator.lr, float) and load_recipe(None, ["generator.lr=1"]).generator.lr == 1.0
    assert load_recipe(None, ["dmd.fake_lr=1e-4"]).dmd.fake_lr == 1e-4  # YAML 1.1 reads 1e-4 as a string; a float key takes it


def test_every_option_beyond_the_paper_is_off_by_default():
    r = load_recipe(None)
    assert (r.discriminator.loss, r.discriminator.r2_gamma, r.generator.rec_max_sigma, r.generator.rec_target, r.dmd.weight) == \
        ("hinge", 0.0, None, "real", 0.0)
    rel = load_recipe(None, ["discriminator.loss=relativistic", "discriminator.r1_gamma=0.3"])
    assert rel.discriminator.r2_gamma == 0.3  # R3GAN pairs R2 with R1 at the same γ unless told otherwise
    assert load_recipe(None, ["discriminator.loss=relativistic", "discriminator.r2_gamma=0"]).discriminator.r2_gamma == 0.0
    assert load_recipe(None, ["generator.adv_weight=0", "generator.huber_weight=0", "dmd.weight=1"]).dmd.weight == 1.0  # DMD alone


@pytest.mark.parametrize("override, message", [
    ("train.totl_videos=5", "unknown recipe key 'train.totl_videos'; valid keys in train: run_dir, seed, batch_size"),
    ("trian.seed=1", "unknown recipe key 'trian'; valid keys: model, data, svd, generator, discriminator, dmd, train"),
    ("train.total_videos=lots", "recipe key 'train.total_videos' must be int, got str 'lots'"),
    ("train.export=3", "recipe key 'train.export' must be bool, got int 3"),
    ("generator.betas=[0.5]", "recipe key 'generator.betas' needs 2 values, got 1"),
    ("train=5", "recipe section 'train' must be a mapping"),
    ("nonsense", "must look like section.key=value"),
    ("discriminator.r1=off", "recipe key 'discriminator.r1' must be str, got bool False"),
    ("train.batch_per_device=0", "recipe key 'train.batch_per_device' must be at least 1, got 0"),
    ("discriminator.r1_interval=0", "recipe key 'discriminator.r1_interval' must be at least 1, got 0"),
    ("discriminator.p_std=0", "recipe key 'discriminator.p_std' must be greater than 0, got 0.0"),
    ("generator.ema=1", "recipe key 'generator.ema' must be below 1"),
    ("discriminator.heads=spatio", "recipe key 'discriminator.heads' must be one of spatial, temporal, both"),
    ("discriminator.loss=wasserstein", "recipe key 'discriminator.loss' must be one of hinge, relativistic, not 'wasserstein'"),
    ("generator.rec_target=ema", "recipe key 'generator.rec_target' must be one of real, teacher, not 'ema'"),
    ("dmd.fake_steps_per_g=0", "recipe key 'dmd.fake_steps_per_g' must be at least 1, got 0"),
    ("dmd.guidance=0.5", "recipe key 'dmd.guidance' must be at least 1, got 0.5"),
    ("discriminator.r2_gamma=-1", "recipe key 'discriminator.r2_gamma' must be at least 0, got -1.0"),
    ("generator.rec_max_sigma=0", "generator.rec_max_sigma must be a noise level σ > 0"),
    ("dmd.fake_lr=fast", "recipe key 'dmd.fake_lr' must be float, got str 'fast'"),
    ("train.lr_decay=linear", "recipe key 'train.lr_decay' must be one of none, cosine, not 'linear'"),
    ("train.lr_decay_from=1", "train.lr_decay_from is the fraction of train.total_videos where the decay starts"),
])
def test_bad_keys_and_types_are_clear_errors(override, message):
    with pytest.raises(InputError) as e:
        load_recipe(None, [override])
    assert message in str(e.value)


def test_bad_recipe_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed")
    with pytest.raises(InputError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")


def test_full_size_recipes_shard_and_the_accelerate_config_only_starts_processes():
    from accelerate.commands.config.config_args import load_config_from_file

    for name in ("svd_14f_768x448", "svd_xt_25f_1024x576"):
        assert load_recipe(f"recipes/{name}.yaml").parallel.mode == "fsdp"
    assert load_recipe("recipes/tiny_cpu.yaml").parallel.mode == "ddp"
    config = load_config_from_file("recipes/accelerate/fsdp_8gpu.yaml")  # sfv applies FSDP2 itself
    assert config.distributed_type.value == "MULTI_GPU" and config.num_processes == 8 and config.mixed_precision == "no"
