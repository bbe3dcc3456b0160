#!/usr/bin/env python3
"""Generates tests/golden/chat/goldens.json: chat templates rendered by Python's jinja2.

The environment mirrors HF transformers' _compile_jinja_template / render_jinja_template
(transformers/utils/chat_template_utils.py): ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True, extensions=[loopcontrols]), a `tojson` filter that is json.dumps with
ensure_ascii=False (no HTML escaping), globals raise_exception and strftime_now, and
render(messages=..., tools=None, documents=None, add_generation_prompt=..., bos_token=...,
eos_token=..., **extra). strftime_now is pinned to a fixed time per case so goldens are stable.

Template sources (tests/golden/chat/templates/):
  smollm2.jinja      tokenizer.chat_template of SmolLM2-135M-Instruct.Q4_1.gguf (gguf package)
  llama3_1.jinja     Llama 3.1/3.3 Instruct (llama.cpp models/templates/
                     meta-llama-Llama-3.3-70B-Instruct.jinja; 3.3 ships the 3.1 template)
  llama3_2.jinja     Llama 3.2 Instruct (llama.cpp models/templates/
                     meta-llama-Llama-3.2-3B-Instruct.jinja)
  mistral_v0_1.jinja Mistral-7B-Instruct-v0.1's original template
  mistral_v0_2.jinja Mistral-7B-Instruct-v0.1/v0.2 and Mixtral after the 2024 update
                     (optional system message)
  mistral_v0_3.jinja Mistral-7B-Instruct-v0.3 (tool calling)
  qwen2_5.jinja      Qwen2.5-7B-Instruct tokenizer_config.json chat_template

Usage: python3 make_goldens.py  (needs jinja2 >= 3.1; writes goldens.json next to itself)
"""

import datetime
import json
import pathlib

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = pathlib.Path(__file__).resolve().parent

TEMPLATES = {
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "llama3_1": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3_2": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral_v0_1": ("<s>", "</s>"),
    "mistral_v0_2": ("<s>", "</s>"),
    "mistral_v0_3": ("<s>", "</s>"),
    "qwen2_5": ("", "<|im_end|>"),
}

FIXED_NOW = datetime.datetime(2025, 3, 7, 14, 30, 5)


def make_env(now):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return now.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(source, messages, add_generation_prompt, bos, eos, extra):
    env = make_env(FIXED_NOW)
    try:
        template = env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        return None, {"kind": "syntax", "message": str(e)}
    try:
        out = template.render(messages=messages, tools=None, documents=None,
                              add_generation_prompt=add_generation_prompt, bos_token=bos,
                              eos_token=eos, **extra)
        return out, None
    except Exception as e:  # noqa: BLE001 - every failure is an expected-error golden
        kind = "raise" if type(e) is jinja2.exceptions.TemplateError else "runtime"
        return None, {"kind": kind, "message": str(e)}


def m(role, content):
    return {"role": role, "content": content}


SYSTEM = m("system", "You are a helpful assistant.")
CONVERSATIONS = {
    "system_user": [SYSTEM, m("user", "Hello!")],
    "user_only": [m("user", "What is 2+2?")],
    "system_only": [SYSTEM],
    "empty": [],
    "multi_turn": [SYSTEM, m("user", "Hi"), m("assistant", "Hello! How can I help?"),
                   m("user", "Tell me a joke.")],
    "multi_turn_no_system": [m("user", "Hi"), m("assistant", "Hello!"), m("user", "Bye")],
    "ends_with_assistant": [m("user", "Ping"), m("assistant", "Pong")],
    "long": [SYSTEM] + [m("user" if i % 2 == 0 else "assistant", f"turn {i}") for i in range(7)],
    "unicode": [m("system", "Réponds en français. 日本語もOK"),
                m("user", "Héllo, 世界! 🚀 Ünïcödé — “quotes” ‘single’"),
                m("assistant", "Grüße 👋 ñ"), m("user", "Ça va? Ελληνικά Кириллица")],
    "whitespace": [m("system", "  padded system  \n"),
                   m("user", "  \n  leading and trailing spaces \n\n"),
                   m("assistant", "\tanswer with tabs\t\n"),
                   m("user", "line1\nline2\r\nline3  ")],
    "unicode_whitespace": [m("user", "\u3000full-width space\u00a0 and nbsp\u2003")],
    "special_chars": [m("user", "{{ not a template }} {% if %} <|im_end|> [INST] \\ \" ' </s>")],
    "empty_content": [m("system", ""), m("user", ""), m("assistant", ""), m("user", " ")],
    "not_alternating": [m("user", "one"), m("user", "two")],
    "assistant_first": [m("assistant", "I start"), m("user", "ok")],
    "tool_message": [m("user", "Weather?"), m("assistant", "Checking."),
                     m("tool", "{\"temp\": 20, \"note\": \"a\\\\b \\u00e9\"}\n")],
    "two_systems": [SYSTEM, m("system", "Second system"), m("user", "Hi")],
    "custom_role": [m("user", "Hi"), m("narrator", "Meanwhile...")],
}

EXTRA_VARS = {
    "llama3_1": [{}, {"date_string": "15 Mar 2025"}],
    "llama3_2": [{"date_string": "15 Mar 2025"}, {}],
}

# Small templates that pin down one interpreter behaviour each. Rendered with
# messages=SNIPPET_MESSAGES, bos_token "<s>", eos_token "</s>", add_generation_prompt=True and
# the extra variables {"name": "World", "csv": "a, b,,c", "num": "42"}.
SNIPPET_MESSAGES = [m("system", "sys"), m("user", "hi  "), m("assistant", " yo"), m("user", "q")]
SNIPPET_VARS = {"name": "World", "csv": "a, b,,c", "num": "42"}
SNIPPETS = [
    "Hello {{ name }}!",
    "{{ undefined_var }}|{{ undefined_var is defined }}|{{ name is defined }}",
    "  {% if true %}\n  x\n  {% endif %}\n  y  {{ 1 }}\n  {%- if true %}z{% endif %}",
    "a\n{%- if true -%}\n  b  \n{%- endif -%}\n  c",
    "{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.length }}/{{ loop.first }}/{{ loop.last }}/{{ loop.revindex }} {% endfor %}",
    "{% for m in messages if m.role == 'user' %}{{ loop.index }}:{{ m.content }}{{ ',' if not loop.last }}{% endfor %}",
    "{% for x in [] %}x{% else %}empty{% endfor %}",
    "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }};{% endfor %}",
    "{% for k, v in {'x': 1, 'y': 'two'}.items() %}{{ k }}={{ v }} {% endfor %}",
    "{% for k, v in {'x': 1, 'y': 'two'} | items %}{{ k }}={{ v }} {% endfor %}",
    "{% for k in {'b': 1, 'a': 2} %}{{ k }}{% endfor %}",
    "{% for c in 'héllo' %}[{{ c }}]{% endfor %}",
    "{% set x = 1 %}{% for i in range(3) %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}",
    "{% set ns = namespace(total=0, found=false) %}{% for i in range(4) %}{% set ns.total = ns.total + i %}{% endfor %}{{ ns.total }} {{ ns.found }}",
    "{% if false %}a{% elif name == 'World' %}b{% else %}c{% endif %}",
    "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }} {{ 6 / 3 }}",
    "{{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-7 }} {{ 3.0 }} {{ 2.5e15 * 4 }} {{ -0.0 }}",
    "{{ 'a' ~ 1 ~ none ~ true ~ undefined_var }}",
    "{{ 'ab' * 3 }} {{ [1] * 2 }} {{ [1, 2] + [3] }}",
    "{{ 1 < 2 < 3 }} {{ 1 < 2 > 3 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ true == 1 }} {{ none == none }} {{ 'a' != 'b' }}",
    "{{ 'ell' in 'hello' }} {{ 2 in [1, 2] }} {{ 'x' not in {'x': 1} }} {{ 'role' in messages[0] }}",
    "{{ not true }} {{ true and 'yes' }} {{ false or 'fallback' }} {{ '' or 0 }} {{ none and 1 }}",
    "{{ 'yes' if 1 > 0 else 'no' }} {{ 'yes' if 0 else 'no' }}[{{ 'only' if false }}]",
    "{{ messages[0]['role'] }} {{ messages[0].content }} {{ messages[-1].content }} {{ messages[1:3] | length }}",
    "{{ 'hello'[1:] }} {{ 'hello'[::-1] }} {{ 'hello'[-3:-1] }} {{ [1, 2, 3, 4][::2] }} {{ 'héllo'[1] }}",
    "{{ '  pad  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ ' a '.strip() }}|{{ ' a '.lstrip() }}|{{ ' a '.rstrip() }}|{{ 'xyx'.strip('x') }}",
    "{{ 'Hello World' | upper }} {{ 'Hello World' | lower }} {{ 'hello world' | capitalize }} {{ 'hello-world foo(bar)' | title }} {{ 'hELLO wORLD' | title }}",
    "{{ 'abc'.upper() }} {{ 'ABC'.lower() }} {{ \"it's o'neil\".title() }} {{ 'hello world'.capitalize() }}",
    "{{ 'a-b-c' | replace('-', '+') }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'abc' | replace('', '.') }}",
    "{{ csv.split(',') }} {{ csv.split() }} {{ '  a  b '.split() }} {{ 'a,b,c'.split(',', 1) }}",
    "{{ 'hello'.startswith('he') }} {{ 'hello'.endswith('lo') }} {{ 'hello'.startswith(('x', 'h')) }}",
    "{{ [1, 2, 3] | join('-') }} {{ ['a', 'b'] | join }} {{ 'abc' | list }} {{ ', '.join(['x', 'y']) }}",
    "{{ [3, 1, 2] | first }} {{ [3, 1, 2] | last }} {{ 'abc' | first }} {{ [] | first }}|{{ [1, 2, 3] | length }} {{ 'héllo' | length }} {{ {'a': 1} | length }} {{ undefined_var | length }}",
    "{{ undefined_var | default('dflt') }} {{ '' | default('empty', true) }} {{ 'x' | d('y') }} {{ none | default('n') }}",
    "{{ num | int + 1 }} {{ '3.7' | int }} {{ 'abc' | int }} {{ 'abc' | int(5) }} {{ 3.9 | int }} {{ '2.5' | float }} {{ 42 | string }}",
    "{{ messages | selectattr('role', 'equalto', 'user') | list | length }} {{ messages | rejectattr('role', 'eq', 'user') | map(attribute='content') | join(',') }}",
    "{{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3, 4] | reject('even') | list }} {{ ['a', 'b'] | map('upper') | list }}",
    "{{ {'a': 1, 'b': [1, 2.5, none, true], 'c': 'é\"\\n<>&'} | tojson }}",
    "{{ {'a': {'b': [1, {}], 'c': []}} | tojson(indent=2) }}",
    "{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }} {{ 'é' | tojson(ensure_ascii=true) }} {{ [1, 2] | tojson(separators=(',', ':')) }}",
    "{{ messages | tojson }}",
    "{{ 'a\\nb\\nc' | indent(2) }}|{{ 'a\\n\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(2, blank=true) }}",
    "{{ 1 is number }} {{ 'a' is string }} {{ {} is mapping }} {{ [] is iterable }} {{ 'a' is iterable }} {{ 1 is iterable }} {{ [] is sequence }} {{ none is none }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 1 is integer }} {{ 1.0 is float }} {{ true is boolean }}",
    "{{ undefined_var is iterable }} {{ undefined_var is sequence }} {{ undefined_var is mapping }} {{ undefined_var is none }} {{ undefined_var is undefined }}",
    "{{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 5 is gt 3 }} {{ 5 is lt 3 }} {{ 'a' is in 'abc' }} {{ 2 is sameas 2 }} {{ none is sameas none }}",
    "{{ {'a': 1}.get('a') }} {{ {'a': 1}.get('b') }} {{ {'a': 1}.get('b', 'z') }} {{ {'a': 1, 'b': 2}.keys() | list }} {{ {'a': 1}.values() | list }}",
    "{{ [1, 'a', none, true, 1.5, {'k': 'v'}, (1, 2), (1,), 'it\\'s'] }}",
    "{{ messages[0] }}",
    "{% set items = ['x', 'y'] %}{% set a, b = items %}{{ b }}{{ a }}",
    "{% set block %}inside {{ name }}{% endset %}[{{ block }}]",
    "{% macro greet(who, punct='!') %}Hi {{ who }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', punct='?') }} {{ greet(who='C') }}",
    "{# a comment #}x{#- stripped -#}   y\n{# line comment #}\nz",
    "{{ \"double\" }} {{ 'single' }} {{ 'esc\\t\\'q\\'' }} {{ 'adj' 'acent' }} {{ '\\u00e9\\x41' }}",
    "{{ range(3) | list }} {{ range(1, 10, 3) | list }} {{ range(5, 0, -2) | list }}",
    "{{ dict(a=1, b='x') }} {{ namespace(a=1).a }}",
    "{{ strftime_now('%d %b %Y') }} {{ strftime_now('%Y-%m-%d %H:%M') }} {{ strftime_now('%B %d, %A') }}",
    "{{ messages[10] is defined }} {{ messages[0].missing is defined }} {{ messages[0]['content'].missing is defined }}",
    "{{ (1, 2) }} {{ () }} {{ [] }} {{ {} }}",
    "{{ -(3) }} {{ +4 }} {{ - 2.5 }} {{ 10 - -1 }}",
    "{{ 'x' | trim | upper | replace('X', 'y') ~ '!' }}",
    "{{ messages | map(attribute='role') | join(', ') }}",
    "{{ [3, 1, 2] | sort | list }} {{ [1, 2, 3] | reverse | list }} {{ 'abc' | reverse }}",
    "{% if messages|length > 2 and messages[0].role == 'system' %}long{% endif %}",
    "  {%+ if true %}kept{% endif %}\n{% if true +%}\nnl kept{% endif %}",
    "{% raw %}{{ not parsed }}{% endraw %}",
    # errors (both must fail)
    "{{ raise_exception('custom failure: ' ~ name) }}",
    "{{ undefined_var.attr }}",
    "{{ undefined_var + 1 }}",
    "{{ 'a' + 1 }}",
    "{{ 1 / 0 }}",
    "{{ messages[9]['role'] }}",
    "{{ none.attr }}x",
    "{{ [1] < 'a' }}",
    "{{ 1 | unknown_filter }}",
    "{{ 1 is unknown_test }}",
    "{{ 'a' | tojson | int }}{{ undefined_var | tojson }}",
    "{% for x in 5 %}{% endfor %}",
    "{{ [].append(1) }}",
    "{% set x = 1 %}{% set x.attr = 2 %}",
    "{{ range(1000000) | length }}",
    # syntax errors
    "{% if true %}never closed",
    "{% for x in %}{% endfor %}",
    "{{ 1 + }}",
    "{% endif %}",
    "{{ 'unterminated }}",
    "{% unknown_tag %}",
    "{{ foo( }}",
    "{# unclosed comment",
    "{{ a b }}",
]


def main():
    cases = []
    for name, (bos, eos) in TEMPLATES.items():
        source = (HERE / "templates" / f"{name}.jinja").read_text(encoding="utf-8")
        for extra in EXTRA_VARS.get(name, [{}]):
            for conv_name, messages in CONVERSATIONS.items():
                for agp in (True, False):
                    out, err = render(source, messages, agp, bos, eos, extra)
                    cases.append({
                        "template": name, "conversation": conv_name, "messages": messages,
                        "add_generation_prompt": agp, "bos_token": bos, "eos_token": eos,
                        "extra_vars": extra, "expected": out, "error": err,
                    })
    snippets = []
    for source in SNIPPETS:
        out, err = render(source, SNIPPET_MESSAGES, True, "<s>", "</s>", SNIPPET_VARS)
        snippets.append({"source": source, "expected": out, "error": err})
    golden = {
        "generator": "tests/golden/chat/make_goldens.py",
        "jinja2_version": jinja2.__version__,
        "now": FIXED_NOW.strftime("%Y-%m-%dT%H:%M:%S"),
        "snippet_messages": SNIPPET_MESSAGES,
        "snippet_vars": SNIPPET_VARS,
        "cases": cases,
        "snippets": snippets,
    }
    text = json.dumps(golden, ensure_ascii=False, indent=1) + "\n"
    (HERE / "goldens.json").write_text(text, encoding="utf-8")
    print(f"wrote {len(cases)} template cases and {len(snippets)} snippets")


if __name__ == "__main__":
    main()
