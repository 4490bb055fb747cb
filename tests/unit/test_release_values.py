"""--set and --values parsing (tether.helper.user.release.values), checked against Helm's own --set parser."""

from __future__ import annotations

import helm_python as helm
import pytest

from tether.helper.user.release.values import ValuesError, combine, parse_set, parse_values_file


@pytest.mark.parametrize(
    "expression",
    [
        "a=1",
        "a.b=true,c=false",
        "a.b.c=x,a.b.d=null",
        "list={10.0.0.0/8,192.168.0.0/16}",
        "n=-3,f=1.5,z=0,lead=007",
        "s=hello world",
        r"esc=a\,b",
        r"dot\.key=1",
    ],
)
def test_typed_like_helm(expression):
    assert parse_set(expression) == helm.parse_set_string(expression)


def test_empty_braces_clear_a_list():
    # Helm makes {} a list holding one empty string; an empty list is what clears a chart's list value
    assert parse_set("client.dns.excludeSuffixes={}") == {"client": {"dns": {"excludeSuffixes": []}}}


def test_values():
    assert parse_set("tunnelMuxPort=0,client.dns.includeSuffixes={.corp,.lan}") == {
        "tunnelMuxPort": 0,
        "client": {"dns": {"includeSuffixes": [".corp", ".lan"]}},
    }


@pytest.mark.parametrize("expression", ["novalue", "a..b=1", "a[0]=1"])
def test_bad_set_names_itself(expression):
    with pytest.raises(ValuesError, match=f'--set "{expression}"'.replace("[", r"\[").replace("]", r"\]")):
        parse_set(expression)


def test_values_file():
    assert parse_values_file("a:\n  b: [1, 2]\n", "f.yaml") == {"a": {"b": [1, 2]}}
    assert parse_values_file("", "f.yaml") == {}
    with pytest.raises(ValuesError, match=r"--values f.yaml: not valid YAML: .* line 2"):
        parse_values_file("a: [1,\nb: }\n", "f.yaml")
    with pytest.raises(ValuesError, match=r"--values f\.yaml: expected a mapping"):
        parse_values_file("- 1\n", "f.yaml")


def test_set_wins_over_files_and_maps_merge():
    files = [{"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"c": 3}}]
    sets = [{"a": {"d": 4}}, {"l": [2]}]
    assert combine(files, sets) == {"a": {"b": 1, "c": 3, "d": 4}, "l": [2]}
    assert files[0] == {"a": {"b": 1, "c": 2}, "l": [1]}  # inputs untouched
