"""Greedy-decode throughput of the thinker LM against `transformers.Qwen2ForCausalLM`.

Both models get identical dimensions and identical weights (a random Qwen2 state dict loaded
into `MuOmniForCausalLM` with `strict=True`; `attention_bias=True` because Qwen2 always has
q/k/v biases), the same prompt, and decode exactly `--new-tokens` tokens each
(`min_new_tokens == max_new_tokens`). Reported: median tokens/s over `--repeats` timed runs after
one warm-up run, and whether the two produced identical token sequences. The runs of the two
models alternate, so drift in machine load hits both alike; on a shared machine `--clock cpu`
(process CPU time, best with `--threads 1`) is less sensitive to other processes than wall time.

    python bench/bench_thinker_decode.py                       # micro preset, batch 1 and 8, CPU
    python bench/bench_thinker_decode.py --batch-sizes 1 --repeats 5 --threads 2
"""

import argparse
import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from muomni import MuOmniForCausalLM, MuOmniTextConfig, get_preset_config


def qwen2_config_from(config: MuOmniTextConfig) -> Qwen2Config:
    """A `Qwen2Config` with the same dimensions, RoPE and special ids as a dense `MuOmniTextConfig`."""
    return Qwen2Config(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters=dict(config.rope_parameters),
        tie_word_embeddings=config.tie_word_embeddings,
        attention_dropout=config.attention_dropout,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        attn_implementation=config._attn_implementation,
    )


def build_models(preset: str, attn_implementation: str) -> tuple[MuOmniForCausalLM, Qwen2ForCausalLM]:
    text = get_preset_config(preset).get_text_config().to_dict()
    text.update(attention_bias=True, attn_implementation=attn_implementation)
    config = MuOmniTextConfig.from_dict(text)
    torch.manual_seed(0)
    qwen2 = Qwen2ForCausalLM(qwen2_config_from(config)).eval()
    ours = MuOmniForCausalLM(config).eval()
    ours.load_state_dict(qwen2.state_dict(), strict=True)
    return ours, qwen2


@torch.inference_mode()
def decode(model, input_ids: torch.Tensor, new_tokens: int, pad_token_id: int, clock) -> tuple[torch.Tensor, float]:
    start = clock()
    output = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=pad_token_id,
    )
    return output, clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="micro")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="wall time or process CPU time")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)

    ours, qwen2 = build_models(args.preset, args.attn_implementation)
    config = ours.config
    if args.prompt_len + args.new_tokens > config.max_position_embeddings:
        raise ValueError(
            f"prompt_len + new_tokens ({args.prompt_len + args.new_tokens}) exceeds "
            f"max_position_embeddings ({config.max_position_embeddings})"
        )
    pad_token_id = config.pad_token_id if config.pad_token_id is not None else 0
    print(
        f"preset {args.preset}: hidden {config.hidden_size}, layers {config.num_hidden_layers}, "
        f"heads {config.num_attention_heads}/{config.num_key_value_heads} kv, vocab {config.vocab_size}, "
        f"{args.attn_implementation}; prompt {args.prompt_len}, new tokens {args.new_tokens}, "
        f"repeats {args.repeats}, threads {torch.get_num_threads()}, {args.clock} clock, torch {torch.__version__}"
    )

    rows = []
    generator = torch.Generator().manual_seed(1)
    for batch in args.batch_sizes:
        # ids >= 16 keep the special tokens out of the prompt
        input_ids = torch.randint(16, config.vocab_size, (batch, args.prompt_len), generator=generator)
        times = {"ours": [], "qwen2": []}
        outputs = {}
        for repeat in range(args.repeats + 1):  # repeat 0 is the warm-up
            # alternate the order so that drift in machine load hits both models alike
            order = [("ours", ours), ("qwen2", qwen2)]
            for name, model in order if repeat % 2 == 0 else order[::-1]:
                outputs[name], seconds = decode(model, input_ids, args.new_tokens, pad_token_id, clock)
                if repeat > 0:
                    times[name].append(seconds)
        new = outputs["ours"].shape[1] - args.prompt_len
        if new != args.new_tokens or outputs["qwen2"].shape[1] - args.prompt_len != args.new_tokens:
            raise RuntimeError(f"expected {args.new_tokens} new tokens, got {new}")
        identical = torch.equal(outputs["ours"], outputs["qwen2"])
        ours_tps = batch * args.new_tokens / statistics.median(times["ours"])
        qwen2_tps = batch * args.new_tokens / statistics.median(times["qwen2"])
        rows.append((batch, ours_tps, qwen2_tps, ours_tps / qwen2_tps, identical))

    print(f"{'batch':>5} | {'ours tok/s':>10} | {'Qwen2 tok/s':>11} | {'ratio':>5} | identical tokens")
    print("-" * 58)
    for batch, ours_tps, qwen2_tps, ratio, identical in rows:
        print(f"{batch:>5} | {ours_tps:>10.1f} | {qwen2_tps:>11.1f} | {ratio:>5.2f} | {identical}")
    if not all(row[-1] for row in rows):
        raise SystemExit("MuOmniForCausalLM and Qwen2ForCausalLM produced different tokens")


if __name__ == "__main__":
    main()
