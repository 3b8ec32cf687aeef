"""Tiny random decoder models of each family, written with save_pretrained, for the causal tests.

Each folder holds a 2-layer model (4 query heads, 2 key-value heads where the family has grouped-query
attention) and one small byte-level BPE tokenizer trained with ``tokenizers`` on a few sentences, with a
ChatML-style chat template. :func:`instruct_from` fine-tunes a base folder a few steps on chat-template
text, so that the pair's attentions differ. No internet is used.
"""

from __future__ import annotations

from pathlib import Path

import torch

SENTENCES = [
    "The cat sat on the mat and looked at the door.",
    "A quick brown fox jumps over the lazy dog.",
    "Attention flows from the last token back to the first one.",
    "What is the capital of France? Paris is the capital of France.",
    "Please summarise the text in one short sentence.",
    "The model predicts the next word from the words before it.",
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CHATS = [
    [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "Paris is the capital of France."}],
    [{"role": "user", "content": "Summarise: the cat sat on the mat."}, {"role": "assistant", "content": "A cat sat."}],
    [{"role": "user", "content": "Which animal jumps over the dog?"}, {"role": "assistant", "content": "The fox."}],
]

FAMILIES = ("gpt2", "llama", "qwen2", "mistral", "gemma", "gemma2", "gemma3_text", "qwen3")


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=360, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    texts = SENTENCES + [m["content"] for chat in CHATS for m in chat] + ["system user assistant"]
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def family_config(family: str, vocab: int, layers: int = 2, hidden: int = 32, heads: int = 4, kv: int = 2):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                  initializer_range=0.3, bos_token_id=0, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    if family == "gpt2":
        return tf.GPT2Config(vocab_size=vocab, n_positions=4096, n_embd=hidden, n_layer=layers, n_head=heads,
                             initializer_range=0.3, bos_token_id=0, eos_token_id=2,
                             scale_attn_by_inverse_layer_idx=True)
    if family == "llama":
        return tf.LlamaConfig(**common)
    if family == "qwen2":
        return tf.Qwen2Config(**common)
    if family == "mistral":
        return tf.MistralConfig(**common, sliding_window=8)
    if family == "gemma":
        return tf.GemmaConfig(**common, head_dim=hidden // heads)
    if family == "gemma2":
        return tf.Gemma2Config(**common, head_dim=hidden // heads, query_pre_attn_scalar=16,
                               attn_logit_softcapping=5.0, final_logit_softcapping=10.0, sliding_window=8)
    if family == "gemma3_text":  # q/k norms before the rotary embeddings, sliding and full layers
        return tf.Gemma3TextConfig(**common, head_dim=hidden // heads, query_pre_attn_scalar=16, sliding_window=8,
                                   layer_types=["sliding_attention", "full_attention"])
    if family == "qwen3":  # q/k norms
        return tf.Qwen3Config(**common, head_dim=hidden // heads)
    raise ValueError(family)


def write_family(family: str, folder: Path, seed: int = 0, **shape) -> Path:
    """A random model of ``family`` with the shared tokenizer, saved to ``folder``."""
    from transformers import AutoModelForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(family_config(family, len(tok), **shape))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)


def instruct_from(base: Path, folder: Path, steps: int = 8, lr: float = 3e-2) -> Path:
    """Fine-tune the model in ``base`` a few steps on chat-template text; save it to ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, attn_implementation="eager")
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    torch.manual_seed(1)
    batches = [tok.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"] for c in CHATS]
    for step in range(steps):
        ids = torch.tensor([batches[step % len(batches)]])
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)
