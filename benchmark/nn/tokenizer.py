"""Tokenizers of the decoder: a checkpoint's own (Llama 3's for the paper), and offline stand-ins.

The `tiny` backbone runs with no download, so its tokenizer is made in-process: a byte-level BPE
(as in Llama 3) trained deterministically on a short built-in English text, so any string in any
script round-trips. It carries Llama 3's special tokens and chat template, so the decoder builds
its prompt the same way for every backbone; training it is quick, so nothing is cached.
Random weights of a Llama 3 architecture (`--backbone paper-shape`) need its vocabulary *size* (it
sets the embedding, the output layer and the logits' memory): the same BPE padded to 128000
entries, then Llama 3.1's 256 special tokens at their real ids, so ids, size and chat template are
the paper tokenizer's.
"""

from __future__ import annotations

import json

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from benchmark.nn.backbones import Backbone

BOS, EOT, END_OF_TEXT, PAD = "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"
START_HEADER, END_HEADER = "<|start_header_id|>", "<|end_header_id|>"
SPECIAL_TOKENS = [BOS, END_OF_TEXT, START_HEADER, END_HEADER, EOT, PAD]

LLAMA3_VOCAB_SIZE = 128256
LLAMA3_FIRST_SPECIAL_ID = 128000
# Llama 3.1's named special tokens by offset from 128000; every other id up to 128255 is reserved.
_LLAMA3_NAMED_SPECIALS = {
    0: BOS, 1: END_OF_TEXT, 4: PAD, 6: START_HEADER, 7: END_HEADER, 8: "<|eom_id|>", 9: EOT,
    10: "<|python_tag|>",
}  # fmt: skip

# Meta-Llama-3-8B-Instruct's template. (3.1's also injects "Cutting Knowledge Date" lines and
# tool-calling blocks into the system turn; a real paper tokenizer keeps its own template.)
LLAMA3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

TINY_VOCAB_SIZE = 1024

# The training text of the tiny BPE: what prompts and responses are made of, then common words.
_TINY_CORPUS = """
system user assistant You are a helpful language and speech assistant.
Content Speech descriptor Please caption the input audio according to content and speech
descriptor-related information.
Transcript: Descriptor: Emotion: transcript descriptor emotion
angry anger happy happiness joy excited sad sadness neutral surprise surprised fear fearful
disgust disgusted frustrated calm
pitch energy speed voice tone volume loud soft quiet high low medium normal fast slow moderate
male female man woman speaker speaks said says saying young old adult child age gender emphasis
with and a an the in of is has his her their very rather slightly quite somewhat fairly
a male speaker with high pitch, loud energy and fast speed.
a female speaker with low pitch, soft energy and slow speed.
the speaker sounds happy and speaks at a normal speed with medium pitch.
the the the of of and and to to a a in in is is it it you you that that
the of and to a in is it you that he was for on are with as I his they be at one have this from
or had by hot word but what some we can out other were all there when up use your how said an
each she which do their time if will way about many then them write would like so these her long
make thing see him two has look more day could go come did number sound no most people my over
know water than call first who may down side been now find any new work part take get place made
live where after back little only round man year came show every good me give our under name very
through just form sentence great think say help low line differ turn cause much mean before move
right boy old too same tell does set three want air well also play small end put home read hand
port large spell add even land here must big high such follow act why ask men change went light
kind off need house picture try us again animal point mother world near build self earth father
head stand own page should country found answer school grow study still learn plant cover food sun
four between state keep eye never last let thought city tree cross farm hard start might story saw
far sea draw left late run don't while press close night real life few north open seem together
next white children begin got walk example ease paper group always music those both mark often
letter until mile river car feet care second book carry took science eat room friend began idea
fish mountain stop once base hear horse cut sure watch color face wood main enough plain girl
usual young ready above ever red list though feel talk bird soon body dog family direct pose leave
song measure door product black short numeral class wind question happen complete ship area half
rock order fire south problem piece told knew pass since top whole king space heard best hour
better true during hundred five remember step early hold west ground interest reach fast verb
sing listen six table travel less morning ten simple several vowel toward war lay against pattern
slow center love person money serve appear road map rain rule govern pull cold notice voice unit
power town fine certain fly fall lead cry dark machine note wait plan figure star box noun field
rest correct able pound done beauty drive stood contain front teach week final gave green oh
quick develop ocean warm free minute strong special mind behind clear tail produce fact street
inch multiply nothing course stay wheel full force blue object decide surface deep moon island
foot system busy test record boat common gold possible plane stead dry wonder laugh thousand ago
ran check game shape equate hot miss brought heat snow tire bring yes distant fill east paint
language among yeah okay oh well I'm it's you're don't can't won't didn't what's that's
"""


def _train_bpe(special_tokens: list[str]) -> Tokenizer:
    """The deterministic byte-level BPE of `_TINY_CORPUS`, `special_tokens` first in its vocabulary."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_TINY_CORPUS.strip().splitlines(), trainer=trainer)
    return bpe


def _llama3_chat_tokenizer(bpe: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=PAD,
        chat_template=LLAMA3_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A deterministic byte-level BPE with Llama 3's special tokens and chat template."""
    return _llama3_chat_tokenizer(_train_bpe(SPECIAL_TOKENS))


def llama3_special_tokens() -> list[str]:
    """Llama 3.1's 256 special tokens in id order, from 128000 to 128255."""
    reserved = iter(range(LLAMA3_VOCAB_SIZE - LLAMA3_FIRST_SPECIAL_ID))
    return [
        _LLAMA3_NAMED_SPECIALS.get(offset) or f"<|reserved_special_token_{next(reserved)}|>"
        for offset in range(LLAMA3_VOCAB_SIZE - LLAMA3_FIRST_SPECIAL_ID)
    ]


def build_llama3_sized_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny BPE padded to Llama 3's 128256 ids, its special tokens at their real ids (module
    docstring). The padding entries (`<unused_N>`) are in the vocabulary but no merge makes them."""
    trained = json.loads(_train_bpe([]).to_str())["model"]
    vocab = dict(trained["vocab"])
    vocab |= {f"<unused_{i}>": i for i in range(len(vocab), LLAMA3_FIRST_SPECIAL_ID)}
    merges = [tuple(merge) for merge in trained["merges"]]  # pairs, as tokenizers >= 0.20 writes them
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(llama3_special_tokens())
    return _llama3_chat_tokenizer(bpe)


def load_tokenizer(backbone: Backbone) -> PreTrainedTokenizerBase:
    """The tokenizer of the backbone's LLM: built in-process for `tiny` and for random weights (Llama
    3's ids), else the checkpoint's own, from its local copy.

    Llama 3.x ships no pad token; its reserved `<|finetune_right_pad_id|>` is used, as Meta's
    fine-tuning recipes do, so padding never aliases the end-of-turn token the loss is trained on.
    """
    if backbone.llm == "tiny":
        return build_tiny_tokenizer()
    if (folder := backbone.hub_folder(backbone.llm)) is None:
        return build_llama3_sized_tokenizer()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD
    return tokenizer
