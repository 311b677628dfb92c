"""``flsec list``: the names a config accepts, their parameters and defaults; the README's copy."""

from pathlib import Path

import pytest

from flsec_flower.app import catalog
from flsec_flower.app.cli import main
from flsec_flower.data.names import DATASETS, PARTITION_KINDS

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = catalog.README_BEGIN, catalog.README_END


def _section(key):
    (section,) = [s for s in catalog.sections() if s.key == key]
    return {name: (params, text) for name, params, text in section.rows}


def test_readme_table_is_what_flsec_list_markdown_prints(capsys):
    assert main(["list", "--markdown"]) == 0
    printed = capsys.readouterr().out
    readme = README.read_text()
    assert readme.split(BEGIN, 1)[1].split(END, 1)[0] == printed, (
        "README.md is stale: run `make readme-list`"
    )


def test_write_readme_replaces_only_the_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{BEGIN}| stale |\n{END}\n\nafter\n")
    catalog.write_readme(readme)
    text = readme.read_text()
    assert text.startswith(f"# title\n\n{BEGIN}**Datasets**")
    assert text.endswith(f"{END}\n\nafter\n")
    assert "stale" not in text


def test_every_name_a_config_accepts_is_listed():
    from flsec_flower.app import registry
    from flsec_flower.config import MODELS

    assert tuple(_section("data.dataset")) == DATASETS
    assert tuple(_section("data.partition.kind")) == PARTITION_KINDS
    assert tuple(_section("model.name")) == MODELS
    assert set(_section("strategy.name")) == set(registry.RULES)
    assert set(_section("strategy.wrappers[i].name")) == set(registry.WRAPPERS)
    assert set(_section("attack.name")) == set(registry.ATTACKS)


def test_parameters_come_with_their_defaults():
    rules = _section("strategy.name")
    assert rules["krum"][0] == ("f", "on_too_few='raise'", "weighted=False")
    assert rules["trimmed_mean"][0][:2] == ("b=None", "beta=None")
    wrappers = _section("strategy.wrappers[i].name")
    assert wrappers["bucketing"][0][:2] == ("s=2", "mode='bucketing'")
    fairness = _section("attack.name")["fairness_attack"][0]
    assert "group=None" in fairness and "forced_label=0" in fairness
    partitions = _section("data.partition.kind")
    assert partitions["dirichlet"][0] == ("alpha=0.5",)
    assert partitions["iid"][0] == ()


@pytest.mark.parametrize("key", ["strategy.name", "attack.name"])
def test_listed_parameters_are_the_ones_the_registry_accepts(key):
    from flsec_flower.app.registry import ATTACKS, RULES, _construct
    from flsec_flower.config import ConfigError

    table = RULES if key == "strategy.name" else ATTACKS
    for name, (params, _) in _section(key).items():
        with pytest.raises(ConfigError) as err:
            _construct(table[name], {"no_such_parameter": 1}, f"{key}.params")
        allowed = err.value.args[0].split("allowed: ", 1)[1]
        assert allowed == (", ".join(p.split("=")[0] for p in params) or "(none)"), name


def test_text_listing_names_the_config_key_of_each_section(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "Aggregation rules (strategy.name):" in out
    assert "Attacks (attack.name):" in out
    krum = next(line for line in out.splitlines() if line.strip().startswith("krum "))
    assert krum.split(None, 1)[1] == "f, on_too_few='raise', weighted=False"


def test_descriptions_are_markdown_not_restructured_text():
    assert catalog._summary("Flower strategy for :func:`~x.mean`, ``w``.\n\nMore.") == (
        "Flower strategy for `x.mean`, `w`."
    )


# ---------------------------------------------------------------- catalogue
CAT_BEGIN, CAT_END = catalog.CATALOGUE_BEGIN, catalog.CATALOGUE_END


def test_readme_catalogue_is_what_flsec_list_catalogue_prints(capsys):
    assert main(["list", "--catalogue"]) == 0
    printed = capsys.readouterr().out
    readme = README.read_text()
    assert readme.split(CAT_BEGIN, 1)[1].split(CAT_END, 1)[0] == printed, (
        "README.md's catalogue is stale: run `make readme-list`"
    )


def test_every_registered_name_has_a_catalogue_row():
    from flsec_flower.app import registry

    assert set(catalog.DEFENCES) == set(registry.RULES) | set(registry.WRAPPERS)
    assert set(catalog.ATTACK_PAPERS) == set(registry.ATTACKS)
    text = catalog.render_catalogue()
    for name in [*registry.RULES, *registry.WRAPPERS, *registry.ATTACKS]:
        assert f"| `{name}` |" in text, name


def test_catalogue_columns_are_read_off_the_classes():
    from flsec_flower.app import registry

    rows = {r[0]: r for r in catalog.defence_rows(registry.RULES)}
    assert rows["krum"][2] == "n > 2f + 2 (`f`)"  # ByzantineBound.requirement
    assert rows["trimmed_mean"][2] == "n > 2b (`b`)"
    assert rows["fltrust"][3] == "root dataset"
    assert rows["fldetector"][4].startswith("`previous_global`")  # state_attributes
    assert rows["foolsgold"][4] == "`histories`" and rows["median"][4] == "no"
    assert rows["dnc"][5] == "legacy `Strategy`, Message API (`MessageStrategy`)"
    assert rows["diversefl"][5] == "legacy `Strategy`"  # samples come by get_properties
    attacks = {r[0]: r for r in catalog.attack_rows()}
    assert attacks["alie"][3].startswith("yes") and attacks["sign_flip"][3] == "no"
    assert attacks["sign_flip"][4] == "`NumPyClient`, client mod (`clients.mods`)"
    assert attacks["label_flip"][4] == "`NumPyClient`"
    assert attacks["alie"][4] == "`NumPyClient`, `tag_mod` + server adversary"


def test_a_name_without_entry_is_named(monkeypatch):
    monkeypatch.delitem(catalog.DEFENCES, "dnc")
    with pytest.raises(KeyError, match=r"rule 'dnc' has no catalogue entry: add it to .*DEFENCES"):
        catalog.render_catalogue()


def test_write_readme_fills_the_catalogue_too(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}{END}\n{CAT_BEGIN}| stale |\n{CAT_END}\nafter\n")
    catalog.write_readme(readme)
    text = readme.read_text()
    assert f"{CAT_BEGIN}**Aggregation rules (`strategy.name`)**" in text
    assert text.endswith(f"{CAT_END}\nafter\n") and "stale" not in text
