"""A choice of site images: only the site's list, by name; recorded on the card and labels."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from sh_jupyter import api, config
from sh_jupyter.cli.render import render
from sh_jupyter.container.spec import LABEL_IMAGE, SessionFacts, create_kwargs, host_mounts
from sh_jupyter.errors import UsageError
from sh_jupyter.jupyterhub import SHJupyterSpawner
from sh_jupyter.jupyterhub.spawner import image_form
from sh_jupyter.paths import TemplateContext
from sh_jupyter.session import Status
from sh_jupyter.slurm.jobs import JobInfo
from sh_jupyter.submitter.card import build
from sh_jupyter.submitter.request import validate

SITE = """
[limits]
max_gpus = 2
[[images]]
name = "python"
description = "Base Python"
reference = "localhost/site/python:1"
[[images]]
name = "r"
description = "R 4.4"
reference = "localhost/site/r:4.4"
[[images]]
name = "cuda"
reference = "localhost/site/cuda:12"
gpu = true
"""


def test_the_first_listed_image_is_the_default_and_others_are_chosen_by_name():
    cfg = config.parse(SITE)
    assert [i.name for i in cfg.images] == ["python", "r", "cuda"]
    assert validate(cfg).image == "python"
    assert validate(cfg, image="r").image == "r"
    assert validate(cfg, gpus=1, image="cuda").image == "cuda"


@pytest.mark.parametrize("name", ["julia", "localhost/site/r:4.4", "R", " r"])
def test_anything_not_in_the_sites_list_is_refused_with_the_list(name):
    cfg = config.parse(SITE)
    with pytest.raises(UsageError) as err:
        validate(cfg, image=name)
    assert err.value.field == "--image" and err.value.value == name
    assert "python (Base Python); r (R 4.4); cuda [needs GPUs]" in str(err.value)


def test_a_gpu_image_needs_gpus():
    with pytest.raises(UsageError, match="needs GPUs: ask for --gpus 1 or more"):
        validate(config.parse(SITE), image="cuda")


def test_without_a_list_image_name_is_the_one_default_image():
    cfg = config.default()
    assert [(i.name, i.reference) for i in cfg.images] == [
        ("default", "localhost/sh-jupyter/jupyterlab:latest")]
    with pytest.raises(UsageError, match="must be one of the site's images: default"):
        validate(cfg, image="other")


@pytest.mark.parametrize(("text", "problem"), [
    ("[[images]]\nname = \"a\"\n", "images[0].reference"),
    ("[[images]]\nreference = \"x\"\n", "images[0].name"),
    ("[[images]]\nname = \"a\"\nreference = \"x\"\n[[images]]\nname = \"a\"\nreference = \"y\"\n",
     "only once"),
    ("[[images]]\nname = \"a b\"\nreference = \"x\"\n", "images[0].name"),
    ("[[images]]\nname = \"a\"\nreference = \"x\"\ncolour = 1\n", "unknown key"),
    ("images = []\n", "non-empty array"),
])
def test_bad_image_lists_are_config_errors(text, problem):
    with pytest.raises(UsageError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        config.parse(text)


def test_the_container_runs_the_chosen_reference_and_is_labelled_with_its_name():
    cfg = config.parse(SITE)
    ctx = TemplateContext("alice", "/home/alice", 1000, "0b7e4c1a-3f2d-4e5a-9b8c-1d2e3f4a5b6c",
                          "7")
    chosen = cfg.image("r")
    facts = SessionFacts(ctx=ctx, port=20000, image=chosen.reference, image_name=chosen.name)
    mounts = host_mounts(cfg.mounts, ctx)
    kw = create_kwargs(cfg, facts, {}, mounts, {m.source for m in mounts})
    assert kw["image"] == "localhost/site/r:4.4" and kw["labels"][LABEL_IMAGE] == "r"


def test_the_card_names_the_image():
    card = build(Status(session_id="s", phase="Queued", job_id="7", image="r"),
                 JobInfo("7", "", "", "PENDING", "Priority"), 0)
    assert card["image"] == "r" and "Image:                  r" in render(card)


def test_the_request_json_takes_an_image():
    assert api.request_from_json(json.dumps({"image": "r"})) == {"image": "r"}


def test_the_hubs_options_form_offers_exactly_the_sites_images(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(SITE.replace("R 4.4", "R <4.4>"), encoding="utf-8")
    sp = SHJupyterSpawner(user=SimpleNamespace(name="u"))
    sp.config_file = str(path)
    form = image_form(sp)
    assert form.count("<option") == 3 and 'name="image"' in form
    assert 'value="python" selected' in form and "R &lt;4.4&gt;" in form
    assert sp.options_from_form({"image": ["r"]}) == {"image": "r"}
    assert sp.options_from_form({}) == {}
    path.write_text("", encoding="utf-8")
    assert image_form(sp) == ""  # one image: nothing to choose
