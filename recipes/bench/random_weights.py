"""Write a randomly initialised model from a config folder, for timing runs only.

Use it where the real weights are not at hand (SmolLM2 is 270 MB in bf16): step time and memory do not
depend on the weights' values, so timing scripts run on this copy.
Quality numbers must never come from it.

    python recipes/bench/random_weights.py CONFIG_DIR OUT_DIR
"""
import argparse
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config_dir")
    p.add_argument("out_dir")
    args = p.parse_args()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.config_dir))
    model.save_pretrained(args.out_dir)
    for f in Path(args.config_dir).glob("tokenizer*"):
        shutil.copy(f, args.out_dir)


if __name__ == "__main__":
    main()
