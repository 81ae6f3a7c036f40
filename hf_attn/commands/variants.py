"""`hf-attn variants`: what is registered, what each needs, which config knobs it reads."""
from __future__ import annotations


def run(args) -> int:
    from ..adapters import list_wrappers
    from ..registry import list_variants, variants_table

    if args.markdown:  # the README's variants table, from the same registry text
        print(variants_table())
        return 0
    print("Attention implementations (attn_implementation=NAME):\n")
    for variant in list_variants().values():
        print(variant.describe() + "\n")
    wrappers = list_wrappers()
    if wrappers:
        print("Wrappers with weights (hf_attn.wrap(model, CONFIG)):\n")
        for spec in wrappers.values():
            doc = (spec.config_cls.__doc__ or "").strip().splitlines()
            print(f"{spec.name}: {spec.config_cls.__name__} - {doc[0] if doc else ''}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("variants", help="list the registered attention variants and wrappers")
    p.add_argument("--markdown", action="store_true", help="print the variants as the README's markdown table")
    p.set_defaults(func=run)
