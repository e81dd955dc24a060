"""Writes a tiny llama-architecture GGUF (one layer, 64 wide, a vocabulary of characters) for
checking KPO's LLM client against a real llama.cpp server without downloading a model
(docs/llm.md, "Checking a server"):

    pip install gguf numpy 'llama-cpp-python[server]'
    python3 xtask/compat/tiny_gguf.py /tmp/tiny.gguf
    python3 -m llama_cpp.server --model /tmp/tiny.gguf --host 127.0.0.1 --port 8089 --n_ctx 32768

It knows nothing: its output layer prefers a few characters, `]` most, whatever the context, so
under a JSON grammar (a `response_format` with a schema) its greedy answer is the smallest valid
one, `{"recommendations":[],"suggestions":[]}`, and without a grammar it repeats `]`."""
import sys
import numpy as np
import gguf

def main(path, seed=0):
    rng = np.random.default_rng(seed)
    chars = [chr(c) for c in range(32, 127)]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + chars
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] \
        + [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * len(chars)
    n_vocab, n_embd, n_ff, n_head, n_layer = len(tokens), 64, 128, 4, 1
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("kpo-tiny-random")
    w.add_context_length(32768)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_chat_template("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant: ")
    f = lambda *shape: (rng.standard_normal(shape) * 0.02).astype(np.float32)
    ones = lambda n: np.ones(n, dtype=np.float32)
    # Every embedding has a large first component, which the tiny random layers barely move:
    # the output layer reads it, so each token's logit is its preference below, whatever the
    # context, and greedy decoding under a grammar takes the most preferred token allowed.
    embd = f(n_vocab, n_embd)
    embd[:, 0] = 1.0
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", ones(n_embd))
    prefer = {"]": 10.0, "}": 9.0, '"': 8.0, "0": 7.0, ",": 6.0, "{": 5.0, "[": 4.0}
    out = (rng.standard_normal((n_vocab, n_embd)) * 0.001).astype(np.float32)
    for i, t in enumerate(tokens):
        out[i, 0] = prefer.get(t, -1.0 if t.strip() else -5.0)
    w.add_tensor("output.weight", out)
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones(n_embd))
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + t + ".weight", f(n_embd, n_embd))
        w.add_tensor(p + "ffn_norm.weight", ones(n_embd))
        w.add_tensor(p + "ffn_gate.weight", f(n_ff, n_embd))
        w.add_tensor(p + "ffn_up.weight", f(n_ff, n_embd))
        w.add_tensor(p + "ffn_down.weight", f(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

if __name__ == "__main__":
    main(sys.argv[1])
