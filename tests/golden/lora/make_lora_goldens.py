#!/usr/bin/env python3
"""LoRA training goldens from PyTorch + Hugging Face peft, for tests/engine/train/peft_golden_model_test.cc.

    make_lora_goldens.py TINY_MODELS_DIR

TINY_MODELS_DIR is what tests/golden/hf/make_tiny_models.py writes (build/tiny_models). For
llama-tiny and qwen2-tiny this script builds a peft LoRA (r=4, alpha=8, all seven projections,
no dropout) with random nonzero A and B (values rounded to float32), saves it with peft's own
save_pretrained (so the C++ loader is tested on bytes peft wrote), then runs two labelled
sequences in float64 and records:

  <model>-adapter/adapter_config.json
                               peft's adapter_config.json, as saved
  <model>-adapter/adapter_model.safetensors.json
                               peft's adapter_model.safetensors, in text form
  <model>.json                 the sequences, their labels (-100 = not a target), the mean
                               loss over all targets, the target count, and the sha256 of the
                               model.safetensors used
  <model>-grads.safetensors.json
                               d(mean loss)/d(lora_A, lora_B), float32, peft's tensor names,
                               as a safetensors file in text form

Repository policy allows no binary files in git, so both .safetensors files are written into
a temporary directory (by peft and by safetensors' save_file, as before) and committed only in
the text form of safetensors_text.py, from which the tests reassemble the same bytes
(tests/golden_safetensors.h) and check them against the sha256 recorded there.

Needs torch (CPU), transformers and peft.
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

import safetensors_text

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SEQUENCES = [
    [1, 40, 77, 12, 200, 5, 63, 150, 9, 33, 101, 2],
    [1, 250, 18, 7, 99, 140],
]
# The loss counts tokens from index 4 on in the first sequence (an "assistant" span) and
# tokens 2 and 4.. in the second.
MASKS = [
    [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1],
    [0, 0, 1, 0, 1, 1],
]


def main():
    models_dir = sys.argv[1]
    torch.manual_seed(1234)
    for name in ["llama-tiny", "qwen2-tiny"]:
        path = os.path.join(models_dir, name)
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0,
                            bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "lora_" in pname:
                    p.copy_((torch.rand(p.shape) * 2 - 1) * 0.3)
        adapter_dir = os.path.join(HERE, f"{name}-adapter")
        os.makedirs(adapter_dir, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            # Also writes README.md, a model card template: not needed.
            model.save_pretrained(tmp)
            shutil.copyfile(os.path.join(tmp, "adapter_config.json"),
                            os.path.join(adapter_dir, "adapter_config.json"))
            safetensors_text.write_text_file(
                os.path.join(tmp, "adapter_model.safetensors"),
                os.path.join(adapter_dir, "adapter_model.safetensors.json"))
        model = model.double()
        total, count = None, 0
        for seq, mask in zip(SEQUENCES, MASKS):
            ids = torch.tensor([seq])
            labels = torch.tensor([t if m else -100 for t, m in zip(seq, mask)])
            n = sum(mask[1:])
            # The loss by hand: transformers' own loss casts the logits to float32.
            logits = model(input_ids=ids).logits[0]
            s = torch.nn.functional.cross_entropy(logits[:-1], labels[1:], ignore_index=-100,
                                                  reduction="sum")
            total = s if total is None else total + s
            count += n
        mean = total / count
        mean.backward()
        grads = {}
        for pname, p in model.named_parameters():
            if "lora_" in pname:
                key = pname.replace(".default", "")
                grads[key] = p.grad.detach().float().contiguous()
        with tempfile.TemporaryDirectory() as tmp:
            save_file(grads, os.path.join(tmp, "grads.safetensors"))
            safetensors_text.write_text_file(
                os.path.join(tmp, "grads.safetensors"),
                os.path.join(HERE, f"{name}-grads.safetensors.json"))
        with open(os.path.join(path, "model.safetensors"), "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        with open(os.path.join(HERE, f"{name}.json"), "w") as f:
            json.dump({"model": name, "model_sha256": sha, "sequences": SEQUENCES,
                       "masks": MASKS, "mean_loss": mean.item(), "num_targets": count,
                       "torch": torch.__version__, "rank": 4, "alpha": 8}, f, indent=1)
        print(name, "mean loss", mean.item(), "targets", count)


if __name__ == "__main__":
    main()
