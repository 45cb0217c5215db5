"""Benchmark: training tokens/s of our step vs the paper's code path, side by side.

Usage::

    pip install transformers        # the reference only; not a project dependency
    python bench/train_throughput.py [--shapes paper-4m,paper-9m,paper-20m] [--rounds 3]

The reference is what the paper trained with: Hugging Face ``LlamaForCausalLM`` of the
same shape (untied head, no biases, SDPA attention, RMSNorm eps 1e-6) and
``torch.optim.AdamW`` with its defaults (lr 5e-5, eps 1e-6, no weight decay), the loss
from ``model(input_ids, labels=input_ids)``. Ours is :class:`trainers.model.Llama` with
the optimizer :func:`trainers.train.train_run` uses. Both train on the same batches of
32 documents x 256 tokens from a PCFG, fp32, with every core of the machine.

For each shape and each vocabulary (the paper's 32001 and the dataset's own, 301) the
two steps are timed in interleaved rounds (ours, reference, ours, ...), and the best
round of each is compared, so machine drift hits both alike. Before timing, the
reference's weights are copied into ours and the two losses compared: the benchmark
also checks that the architectures are the same function.

Writes ``bench/results/train_throughput.json``. Goal: ours >= 1.3x the reference at the
same shape and vocabulary; the JSON also gives the extra gain from the true vocabulary.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import torch  # noqa: E402

from bench.common import write_results  # noqa: E402
from gzipscale.trainers.config import preset  # noqa: E402
from gzipscale.trainers.model import Llama  # noqa: E402
from gzipscale.trainers.shapes import PAPER_VOCAB, get_shape  # noqa: E402
from gzipscale.trainers.train import make_optimizer  # noqa: E402

BATCH, CONTEXT = 32, 256
DATASET_VOCAB = 301  # a 300-terminal PCFG plus the separator
GOAL = 1.3


def pcfg_batch(vocab: int, seed: int = 0) -> torch.Tensor:
    """32 documents of a (20,300,5,10) grammar; ids fit any vocabulary >= 301."""
    import numpy as np

    from gzipscale.grammars.compiled import compile_grammar
    from gzipscale.grammars.random_pcfg import grammar_text
    from gzipscale.grammars.sampler import sample_documents
    from gzipscale.grammars.spec import GrammarSpec

    spec = GrammarSpec.parse("20,300,5,10", seed=seed)
    g = compile_grammar(grammar_text(spec), spec.name)
    docs = sample_documents(g, BATCH, np.random.default_rng(seed), CONTEXT)
    assert docs.max() < vocab
    return torch.from_numpy(docs).long()


def reference_model(shape, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=CONTEXT,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config)


def copy_reference_weights(ref, ours: Llama) -> None:
    """Hugging Face's separate q/k/v and gate/up into our fused matrices."""
    sd = ref.state_dict()
    new = {
        "embed.weight": sd["model.embed_tokens.weight"],
        "norm.weight": sd["model.norm.weight"],
        "head.weight": sd["lm_head.weight"],
    }
    for i in range(ours.shape.layers):
        p = f"model.layers.{i}."
        new[f"blocks.{i}.attn_norm.weight"] = sd[p + "input_layernorm.weight"]
        new[f"blocks.{i}.mlp_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
        new[f"blocks.{i}.attn.qkv.weight"] = torch.cat(
            [sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv"]
        )
        new[f"blocks.{i}.attn.out.weight"] = sd[p + "self_attn.o_proj.weight"]
        new[f"blocks.{i}.mlp.gate_up.weight"] = torch.cat(
            [sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]]
        )
        new[f"blocks.{i}.mlp.down.weight"] = sd[p + "mlp.down_proj.weight"]
    ours.load_state_dict(new)


def make_steps(shape, vocab: int, batch: torch.Tensor, compile_ours: bool = False):
    torch.manual_seed(0)
    ref = reference_model(shape, vocab)
    ours = Llama(shape, vocab, CONTEXT)
    copy_reference_weights(ref, ours)
    ref_loss = ref(input_ids=batch, labels=batch).loss.item()
    _, our_loss = ours(batch[:, :-1], batch[:, 1:])
    agreement = abs(ref_loss - our_loss.item())

    cfg = preset("paper")
    ref_opt = torch.optim.AdamW(
        ref.parameters(),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
    )
    our_opt = make_optimizer(ours, cfg, torch.device("cpu"))
    our_model = torch.compile(ours) if compile_ours else ours

    def ref_step():
        loss = ref(input_ids=batch, labels=batch).loss
        loss.backward()
        ref_opt.step()
        ref_opt.zero_grad(set_to_none=True)

    def our_step():
        _, loss = our_model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        our_opt.step()
        our_opt.zero_grad(set_to_none=True)

    return our_step, ref_step, agreement, ref_loss


def time_steps(step, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def bench(shape_name: str, vocab: int, rounds: int, steps: int, compile_ours: bool) -> dict:
    shape = get_shape(shape_name)
    batch = pcfg_batch(vocab)
    our_step, ref_step, agreement, ref_loss = make_steps(shape, vocab, batch, compile_ours)
    start = time.perf_counter()
    our_step()  # warm-up (and compilation): allocator, thread pools
    first_step_s = time.perf_counter() - start
    ref_step()
    ours, ref = [], []
    for _ in range(rounds):
        ours.append(time_steps(our_step, steps))
        ref.append(time_steps(ref_step, steps))
    tokens = BATCH * CONTEXT
    row = {
        "shape": shape_name,
        "vocab": vocab,
        "params": shape.params(vocab),
        "ours_tokens_per_s": tokens / min(ours),
        "reference_tokens_per_s": tokens / min(ref),
        "ours_step_s": ours,
        "reference_step_s": ref,
        "compiled": compile_ours,
        "ours_first_step_s": first_step_s,
        "initial_loss_difference": agreement,
        "initial_loss": ref_loss,
    }
    row["ratio"] = row["ours_tokens_per_s"] / row["reference_tokens_per_s"]
    print(
        f"{shape_name:10s} vocab {vocab:6d}{' compiled' if compile_ours else ''}: ours {row['ours_tokens_per_s']:9,.0f} tok/s, "
        f"reference {row['reference_tokens_per_s']:9,.0f} tok/s, ratio {row['ratio']:.2f}x "
        f"(same loss to {agreement:.1e})",
        flush=True,
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="paper-4m,paper-9m,paper-20m")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="steps per timed round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--modes",
        default="eager,compiled",
        help="our step eager (the CPU default for short runs) and/or torch.compile'd",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    modes = args.modes.split(",")
    for name in args.shapes.split(","):
        for vocab in (PAPER_VOCAB, DATASET_VOCAB):
            for mode in modes:
                rows.append(bench(name, vocab, args.rounds, args.steps, mode == "compiled"))
    best = {}
    for r in rows:  # per shape and vocab, our faster mode
        key = (r["shape"], r["vocab"])
        if key not in best or r["ratio"] > best[key]["ratio"]:
            best[key] = r
    by = best
    gains = {}
    for name in args.shapes.split(","):
        paper, true = by[(name, PAPER_VOCAB)], by[(name, DATASET_VOCAB)]
        gains[name] = {
            "ours_true_vocab_vs_reference_paper_vocab": true["ours_tokens_per_s"]
            / paper["reference_tokens_per_s"],
            "ours_true_vocab_vs_ours_paper_vocab": true["ours_tokens_per_s"]
            / paper["ours_tokens_per_s"],
        }
        print(
            f"{name}: the true vocabulary trains "
            f"{gains[name]['ours_true_vocab_vs_reference_paper_vocab']:.0f}x the reference's "
            f"tokens/s at vocab {PAPER_VOCAB}"
        )
    met = all(r["ratio"] >= GOAL for r in best.values())
    path = write_results(
        "train_throughput",
        {
            "batch": [BATCH, CONTEXT],
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "goal_ratio": GOAL,
            "goal_met": met,
            "rows": rows,
            "best_ratio": {f"{k[0]}@{k[1]}": v["ratio"] for k, v in best.items()},
            "true_vocab_gain": gains,
        },
    )
    print(f"goal >= {GOAL}x at identical shape and vocab: {'met' if met else 'NOT met'}; {path}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
