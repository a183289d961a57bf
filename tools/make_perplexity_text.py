#!/usr/bin/env python3
"""A deterministic English text for perplexity runs (anvil perplexity --ctx-size vs llama-perplexity).

An order-2 word Markov chain over a few public-domain passages embedded below (the Gettysburg Address, 1863; the
opening of the US Declaration of Independence, 1776; Psalm 23 and Genesis 1:1-5 in the King James Version, 1611),
walked with random.Random(seed). Plain ASCII paragraphs; the same arguments give the same bytes on any machine
(the script prints the SHA-256). The text is not meant to be good English, only the same input for both engines.
Example: python3 tools/make_perplexity_text.py --out /work/peers/ppl.txt --words 20000
"""
import argparse
import hashlib
import random

SOURCES = [
    """Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in
    Liberty, and dedicated to the proposition that all men are created equal. Now we are engaged in a great civil
    war, testing whether that nation, or any nation so conceived and so dedicated, can long endure. We are met on a
    great battle-field of that war. We have come to dedicate a portion of that field, as a final resting place for
    those who here gave their lives that that nation might live. It is altogether fitting and proper that we
    should do this. But, in a larger sense, we can not dedicate, we can not consecrate, we can not hallow this
    ground. The brave men, living and dead, who struggled here, have consecrated it, far above our poor power to
    add or detract. The world will little note, nor long remember what we say here, but it can never forget what
    they did here. It is for us the living, rather, to be dedicated here to the unfinished work which they who
    fought here have thus far so nobly advanced. It is rather for us to be here dedicated to the great task
    remaining before us, that from these honored dead we take increased devotion to that cause for which they gave
    the last full measure of devotion, that we here highly resolve that these dead shall not have died in vain,
    that this nation, under God, shall have a new birth of freedom, and that government of the people, by the
    people, for the people, shall not perish from the earth.""",
    """When in the Course of human events, it becomes necessary for one people to dissolve the political bands
    which have connected them with another, and to assume among the powers of the earth, the separate and equal
    station to which the Laws of Nature and of Nature's God entitle them, a decent respect to the opinions of
    mankind requires that they should declare the causes which impel them to the separation. We hold these truths
    to be self-evident, that all men are created equal, that they are endowed by their Creator with certain
    unalienable Rights, that among these are Life, Liberty and the pursuit of Happiness. That to secure these
    rights, Governments are instituted among Men, deriving their just powers from the consent of the governed.
    That whenever any Form of Government becomes destructive of these ends, it is the Right of the People to alter
    or to abolish it, and to institute new Government, laying its foundation on such principles and organizing its
    powers in such form, as to them shall seem most likely to effect their Safety and Happiness.""",
    """The Lord is my shepherd; I shall not want. He maketh me to lie down in green pastures: he leadeth me beside
    the still waters. He restoreth my soul: he leadeth me in the paths of righteousness for his name's sake. Yea,
    though I walk through the valley of the shadow of death, I will fear no evil: for thou art with me; thy rod and
    thy staff they comfort me. Thou preparest a table before me in the presence of mine enemies: thou anointest my
    head with oil; my cup runneth over. Surely goodness and mercy shall follow me all the days of my life: and I
    will dwell in the house of the Lord for ever.""",
    """In the beginning God created the heaven and the earth. And the earth was without form, and void; and
    darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. And God said,
    Let there be light: and there was light. And God saw the light, that it was good: and God divided the light
    from the darkness. And God called the light Day, and the darkness he called Night. And the evening and the
    morning were the first day.""",
]


def make_text(num_words, seed):
    words = " ".join(" ".join(s.split()) for s in SOURCES).split(" ")
    chain = {}
    for a, b, c in zip(words, words[1:], words[2:]):
        chain.setdefault((a, b), []).append(c)
    rng = random.Random(seed)
    keys = sorted(chain)
    out, paragraph, count = [], [], 0
    state = keys[rng.randrange(len(keys))]
    while count < num_words:
        nxt = chain.get(state)
        if not nxt:
            state = keys[rng.randrange(len(keys))]
            continue
        word = nxt[rng.randrange(len(nxt))]
        paragraph.append(word)
        count += 1
        state = (state[1], word)
        if word.endswith(".") and len(paragraph) > 60 and rng.random() < 0.3:
            out.append(" ".join(paragraph))
            paragraph = []
    out.append(" ".join(paragraph))
    return "\n\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--words", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    text = make_text(args.words, args.seed)
    with open(args.out, "w", encoding="ascii") as f:
        f.write(text)
    print(args.out, len(text), "bytes, sha256", hashlib.sha256(text.encode("ascii")).hexdigest())


if __name__ == "__main__":
    main()
