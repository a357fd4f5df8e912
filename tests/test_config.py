import pytest

from trace2skill.config import load_config
from trace2skill.errors import ConfigError


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path):
    (tmp_path / "trace2skill.toml").write_text('[llm]\nmodel = "file-model"\ntimeout = 30\n[consolidate]\nfan_in = 4\n')
    env = {"TRACE2SKILL_MODEL": "env-model", "TRACE2SKILL_CONSOLIDATE__FAN_IN": "6"}
    config = load_config(overrides={"llm.model": "flag-model"}, env=env, cwd=tmp_path)
    assert config.llm.model == "flag-model"
    assert config.consolidate.fan_in == 6
    assert config.llm.timeout == 30
    assert config.analyse.concurrency == 4


def test_pyproject_tool_table_is_read(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.trace2skill.skill]\nname = "my-skill"\n')
    assert load_config(env={}, cwd=tmp_path).skill.name == "my-skill"


def test_bad_values_and_unknown_keys_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="fan_in"):
        load_config(overrides={"consolidate.fan_in": 1}, env={}, cwd=tmp_path)
    (tmp_path / "trace2skill.toml").write_text("[llm]\nmodle = 'typo'\n")
    with pytest.raises(ConfigError, match="modle"):
        load_config(env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", env={})


def test_unknown_keys_name_the_environment_variable_that_set_them(tmp_path):
    with pytest.raises(ConfigError, match=r"bogus: unknown key \(set by TRACE2SKILL_BOGUS\)"):
        load_config(env={"TRACE2SKILL_BOGUS": "1"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"consolidate\.min_support: .*\(set by TRACE2SKILL_CONSOLIDATE__MIN_SUPPORT\)"):
        load_config(env={"TRACE2SKILL_CONSOLIDATE__MIN_SUPPORT": "zero"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"invalid configuration: nosuch: unknown key$"):
        load_config(overrides={"nosuch.key": "1"}, env={}, cwd=tmp_path)


@pytest.mark.parametrize("name", ["My Skill", "../escape", "a/b", "-lead", "trail-", "double--hyphen", "x" * 65, ""])
def test_skill_name_is_checked_when_the_config_is_built(tmp_path, name):
    with pytest.raises(ConfigError, match="skill.name: .* is not a valid skill name"):
        load_config(overrides={"skill.name": name}, env={}, cwd=tmp_path)


def test_valid_skill_names_pass(tmp_path):
    for name in ("agent-lessons", "v2", "ünïcode-skill"):
        assert load_config(overrides={"skill.name": name}, env={}, cwd=tmp_path).skill.name == name


def test_relative_paths_in_a_config_file_are_relative_to_the_file(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "trace2skill.toml").write_text('sources = ["traces"]\nstate_dir = ".state"\n[skill]\nout = "skills"\n')
    config = load_config(project / "trace2skill.toml", env={}, cwd=tmp_path)
    assert config.sources == [str(project / "traces")]
    assert config.state_dir == project / ".state"
    assert config.skill.out == project / "skills"
