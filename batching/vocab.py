"""A SentencePiece-style ("llama") vocabulary for the demo model, built here or read from a GGUF."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import gguf

SPACE = "\u2581"  # SentencePiece's visible space; llama.cpp turns " " into it before merging

# Common English words, most frequent first (written for this project, not taken from a corpus).
_WORDS = """
the of and to a in is it you that he was for on are with as I his they be at one have this from
or had by not but what some we can out other were all there when up use your how said an each she
which do their time if will way about many then them write would like so these her long make thing
see him two has look more day could go come did number sound no most people my over know water
than call first who may down side been now find any new work part take get place made live where
after back little only round man year came show every good me give our under name very through
just form sentence great think say help low line differ turn cause much mean before move right
boy old too same tell does set three want air well also play small end put home read hand port
large spell add even land here must big high such follow act why ask men change went light kind
off need house picture try us again animal point mother world near build self earth father head
stand own page should country found answer school grow study still learn plant cover food sun
four between state keep eye never last let thought city tree cross farm hard start might story
saw far sea draw left late run while press close night real life few north open seem together
next white children begin got walk example ease paper group always music those both mark often
letter until mile river car feet care second book carry took science eat room friend began idea
fish mountain stop once base hear horse cut sure watch color face wood main enough plain girl
usual young ready above ever red list though feel talk bird soon body dog family direct pose
leave song measure door product black short numeral class wind question happen complete ship
area half rock order fire south problem piece told knew pass since top whole king space heard
best hour better true during hundred five remember step early hold west ground interest reach
fast verb sing listen six table travel less morning ten simple several vowel toward war lay
against pattern slow center love person money serve appear road map rain rule govern pull cold
notice voice unit power town fine certain fly fall lead cry dark machine note wait plan figure
star box noun field rest correct able pound done beauty drive stood contain front teach week
final gave green oh quick develop ocean warm free minute strong special mind behind clear tail
produce fact street inch multiply nothing course stay wheel full force blue object decide
surface deep moon island foot system busy test record boat common gold possible plane stead dry
wonder laugh thousand ago ran check game shape equate hot miss brought heat snow tire bring yes
distant fill east paint language among grand ball yet wave drop heart am present heavy dance
engine position arm wide sail material size vary settle speak weight general ice matter circle
pair include divide syllable felt perhaps pick sudden count square reason length represent art
subject region energy hunt probable bed brother egg ride cell believe fraction forest sit race
window store summer train sleep prove lone leg exercise wall catch mount wish sky board joy
winter sat written wild instrument kept glass grass cow job edge sign visit past soft fun
bright gas weather month million bear finish happy hope flower clothe strange gone jump baby
eight village meet root buy raise solve metal whether push seven paragraph third shall held hair
describe cook floor either result burn hill safe cat century consider type law bit coast copy
phrase silent tall sand soil roll temperature finger industry value fight lie beat excite
natural view sense ear else quite broke case middle kill son lake moment scale loud spring
observe child straight consonant nation dictionary milk speed method organ pay age section dress
cloud surprise quiet stone tiny climb cool design poor lot experiment bottom key iron single
stick flat twenty skin smile crease hole trade melody trip office receive row mouth exact symbol
die least trouble shout except wrote seed tone join suggest clean break lady yard rise bad blow
oil blood touch grew cent mix team wire cost lost brown wear garden equal sent choose fell fit
flow fair bank collect save control decimal gentle woman captain practice separate difficult
doctor please protect noon whose locate ring character insect caught period indicate radio
spoke atom human history effect electric expect crop modern element hit student corner party
supply bone rail imagine provide agree thus capital chair danger fruit rich thick soldier
process operate guess necessary sharp wing create neighbor wash bat rather crowd corn compare
poem string bell depend meat rub tube famous dollar stream fear sight thin triangle planet hurry
chief colony clock mine tie enter major fresh search send yellow gun allow print dead spot desert
suit current lift rose continue block chart hat sell success company subtract event particular
deal swim term opposite wife shoe shoulder spread arrange camp invent cotton born determine quart
nine truck noise level chance gather shop stretch throw shine property column molecule select
wrong gray repeat require broad prepare salt nose plural anger claim continent oxygen sugar death
pretty skill women season solution magnet silver thank branch match suffix especially fig afraid
huge sister steel discuss forward similar guide experience score apple bought led pitch coat mass
card band rope slip win dream evening condition feed tool total basic smell valley nor double
seat arrive master track parent shore division sheet substance favor connect post spend chord fat
glad original share station dad bread charge proper bar offer segment slave duck instant market
degree populate chick dear enemy reply drink occur support speech nature range steam motion path
liquid log meant quotient teeth shell neck hello thanks sorry today tomorrow yesterday everyone
someone something anything everything nobody model server request response token text data file
code user computer network message answer assistant system question chat hi okay sure maybe mat
am is are was were be been being have has had do does did done going getting making taking using
things words days years times people's world's know knows knew known said says saying goes went
looked looking asked asking called calling worked working wanted wants seemed seems felt feels
became become becomes began begins told tells found finds gave gives given taken thought thinks
brought brings stood stands understood understand understanding however although because
without within upon around across along behind beyond below during already almost another anyone
whatever whenever wherever whole whose whom yourself myself himself herself itself ourselves
themselves able actually again against ahead alone also always anyway anywhere away certainly
clearly completely especially exactly finally generally probably quickly really recently simply
slowly suddenly usually important different possible available likely early easy free full
hard large local major national natural new nice open political public recent short social
special strong white whole young government company business service problem program research
information development community question education health business power money market policy
result process system issue report level member office order point minute moment party position
""".split()

_SUBWORDS = (
    "s es ed ing ly er ers est ion ions tion tions sion ment ments ness less ful able ible al "
    "ial ic ical ous ious ive ity ize ise ized ised ism ist ists ance ence ant ent ure ward wards "
    "like ship hood dom ate ated ates ating an ar en on or in it at et ot ut ab ac ad ag am ap as "
    "av ay re un de dis pre pro con com ex im inter over under out up non anti auto sub super "
    "trans th ch sh ph wh qu ck ng nt st str tr pl bl cl gr br cr dr fr pr sp sc sk sm sn sw tw "
    "'s 't 're 've 'll 'd 'm .. ... ?! !! ?? -- ), ). ,\" .\" :// www .com .org .html .py .js"
).split()

# Latin-1 letters U+00C0..U+00FF, then typographic punctuation (escaped: ruff flags look-alikes).
_EXTRA_CHARS = [chr(c) for c in range(0xC0, 0x100)] + list(
    "\u2014\u2013\u2018\u2019\u201c\u201d\u2026\u2022\u20ac\u00a3\u00a5\u00b0\u00b1\u00b5"
    "\u00a7\u00a9\u00ae\u2122\u00bf\u00a1\u00ab\u00bb\u0153\u0152"
)

_ONSETS = (
    "b c d f g h j k l m n p r s t v w y z bl br ch cl cr dr fl fr gl gr pl pr sh sk sl sp st tr"
).split()
_VOWELS = "a e i o u ea ee ai ou oo ie".split()
_CODAS = "b ck d f g k l m n p r s t x nd ng nt rd rk rm rn rt sh sk st th".split()


class KeyValue(NamedTuple):
    """One GGUF metadata value with its type, copied verbatim from another file."""

    value: Any
    vtype: gguf.GGUFValueType
    sub_type: gguf.GGUFValueType | None


@dataclass
class Vocab:
    """A tokenizer as GGUF stores it: parallel token/score/type lists plus special ids."""

    tokens: list[str]
    scores: list[float]
    types: list[int]
    model: str = "llama"
    bos_id: int | None = 1
    eos_id: int | None = 2
    unk_id: int | None = 0
    add_bos: bool = True
    add_eos: bool = False
    chat_template: str | None = None
    extra: dict[str, KeyValue] = field(default_factory=dict)


def _prefixes(piece: str, start: int) -> Iterator[str]:
    # SPM merges pairs of existing tokens, so every prefix must exist for the whole piece to form.
    for end in range(start, len(piece) + 1):
        yield piece[:end]


def _syllables() -> Iterator[str]:
    """Pronounceable filler pieces, deterministic, so random output still looks word-like."""
    for onset, vowel in itertools.product(_ONSETS, _VOWELS):
        yield SPACE + onset + vowel
        yield onset + vowel
    for onset, vowel, coda in itertools.product(_ONSETS, _VOWELS, _CODAS):
        yield SPACE + onset + vowel + coda
        yield onset + vowel + coda
    for vowel, coda, vowel2 in itertools.product(_VOWELS, _CODAS, _VOWELS):
        yield vowel + coda + vowel2
    for onset, vowel, coda, vowel2 in itertools.product(_ONSETS, _VOWELS, _CODAS, _VOWELS):
        yield SPACE + onset + vowel + coda + vowel2


def _real_pieces() -> dict[str, float]:
    """Every real piece with its score: space-led pieces beat the rest, longer and commoner win."""
    scored: dict[str, float] = {}

    def put(piece: str, bonus: float) -> None:
        # A space-led piece always outranks a sub-word merge, so words grow whole from their start.
        score = (1000.0 if piece.startswith(SPACE) else 0.0) + 10.0 * len(piece) + bonus
        scored[piece] = max(scored.get(piece, score), score)

    chars = [chr(c) for c in range(33, 127)] + _EXTRA_CHARS + [SPACE]
    for char in chars:
        put(char, 0.0)
    for run in range(2, 17):
        put(SPACE * run, 0.0)
    words = list(dict.fromkeys(_WORDS))
    for rank, word in enumerate(words):
        bonus = 5.0 * (1.0 - rank / len(words))
        for form in dict.fromkeys((word, word.capitalize())):
            for piece in _prefixes(SPACE + form, 2):
                put(piece, bonus)
    for sub in _SUBWORDS:
        for piece in _prefixes(sub, 2):
            put(piece, 1.0)
    for number in range(1000):
        for piece in _prefixes(SPACE + str(number), 2):
            put(piece, 2.0)
    for number in range(100):
        put(f"{number:02d}", 1.0)
    return scored


def build_vocab(size: int = 32000) -> Vocab:
    """The project's own LLaMA-style vocabulary of exactly `size` tokens."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256
    scores = [0.0] * len(tokens)
    seen = set(tokens)
    real = _real_pieces()
    filler = (p for p in _syllables() if p not in real)
    # Fillers score below every real piece so they never win a merge a real word wants.
    pieces = itertools.chain(real.items(), ((p, -1.0 - i / size) for i, p in enumerate(filler)))
    for piece, score in pieces:
        if len(tokens) == size:
            break
        if piece in seen:
            continue
        seen.add(piece)
        tokens.append(piece)
        scores.append(score)
        types.append(gguf.TokenType.NORMAL)
    if len(tokens) != size:
        raise ValueError(f"cannot build a vocabulary of {size} tokens (have {len(tokens)})")
    return Vocab(tokens=tokens, scores=scores, types=[int(t) for t in types])


_TOK = gguf.Keys.Tokenizer


def read_vocab(path: Path) -> Vocab:
    """The tokenizer of an existing GGUF: every `tokenizer.*` key, copied as stored."""
    reader = gguf.GGUFReader(path)
    kv: dict[str, KeyValue] = {}
    for name, fld in reader.fields.items():
        if name.startswith("tokenizer.") and fld.types:
            sub_type = fld.types[-1] if fld.types[0] == gguf.GGUFValueType.ARRAY else None
            kv[name] = KeyValue(fld.contents(), fld.types[0], sub_type)
    if _TOK.LIST not in kv:
        raise ValueError(f"{path} has no tokenizer ({_TOK.LIST} is missing)")

    def pop(key: str) -> Any:
        item = kv.pop(key, None)
        return None if item is None else item.value

    tokens: list[str] = pop(_TOK.LIST)
    scores = pop(_TOK.SCORES)
    types = pop(_TOK.TOKEN_TYPE)
    add_bos, add_eos = pop(_TOK.ADD_BOS), pop(_TOK.ADD_EOS)
    return Vocab(
        tokens=tokens,
        scores=[] if scores is None else [float(s) for s in scores],
        types=[int(gguf.TokenType.NORMAL)] * len(tokens) if types is None else types,
        model=pop(_TOK.MODEL) or "llama",
        bos_id=pop(_TOK.BOS_ID),
        eos_id=pop(_TOK.EOS_ID),
        unk_id=pop(_TOK.UNK_ID),
        # llama.cpp's own defaults when the key is absent: BOS on for SPM, EOS off.
        add_bos=True if add_bos is None else bool(add_bos),
        add_eos=False if add_eos is None else bool(add_eos),
        chat_template=pop(_TOK.CHAT_TEMPLATE),
        extra=kv,
    )


def add_vocab(writer: gguf.GGUFWriter, vocab: Vocab) -> None:
    """Write the `tokenizer.*` metadata of `vocab` into a GGUF being built."""
    writer.add_tokenizer_model(vocab.model)
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)  # an empty list (BPE vocabularies) writes nothing
    writer.add_token_types(vocab.types)
    for key, token_id in ((_TOK.BOS_ID, vocab.bos_id), (_TOK.EOS_ID, vocab.eos_id)):
        if token_id is not None:
            writer.add_uint32(key, token_id)
    if vocab.unk_id is not None:
        writer.add_unk_token_id(vocab.unk_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template is not None:
        writer.add_chat_template(vocab.chat_template)
    for key, item in vocab.extra.items():
        writer.add_key_value(key, item.value, item.vtype, item.sub_type)
