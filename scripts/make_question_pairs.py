"""Write a templated Quora-format file of paraphrase and non-paraphrase question pairs.

Duplicates: the same intent and slot under two different templates (synonym swaps,
reordering). Non-duplicates share most words but differ in a key slot, or keep the slot and
change the intent. Deterministic per seed.

    python scripts/make_question_pairs.py out.tsv --pairs 6000 --seed 0
"""
import argparse
import csv
import os
import random

LANGUAGES = ["python", "java", "javascript", "c++", "rust", "go", "ruby", "haskell", "scala",
             "kotlin", "swift", "php", "perl", "matlab", "r", "julia", "typescript", "sql",
             "elixir", "fortran"]
SKILLS = ["guitar", "piano", "violin", "drums", "chess", "painting", "swimming", "cooking",
          "photography", "french", "german", "spanish", "japanese", "mandarin", "calculus",
          "statistics", "yoga", "skiing", "dancing", "singing"]
CITIES = ["paris", "london", "tokyo", "berlin", "rome", "madrid", "delhi", "mumbai", "sydney",
          "toronto", "chicago", "boston", "seattle", "dubai", "istanbul", "cairo", "lisbon",
          "prague", "vienna", "bangkok"]
JOBS = ["doctor", "lawyer", "teacher", "pilot", "nurse", "engineer", "architect", "chef",
        "journalist", "dentist", "pharmacist", "accountant", "designer", "firefighter",
        "electrician", "plumber", "psychologist", "veterinarian", "scientist", "banker"]

# intent -> (slot list, paraphrase templates)
INTENTS = {
    "learn_lang": (LANGUAGES, [
        "How do I learn {x}?", "What is the best way to learn {x}?",
        "How can I start learning {x}?", "What's the easiest way to learn {x} programming?",
        "I want to learn {x}. Where should I start?", "{x}: how should a beginner learn it?"]),
    "install_lang": (LANGUAGES, [
        "How do I install {x} on my computer?", "How can I set up {x} on my laptop?",
        "What are the steps to install {x}?", "Installing {x}: how do I do it on my PC?"]),
    "learn_skill": (SKILLS, [
        "How do I get better at {x}?", "How can I improve my {x} skills?",
        "What is the fastest way to improve at {x}?", "What should I do to become good at {x}?",
        "Any tips for getting better at {x}?"]),
    "start_skill": (SKILLS, [
        "Is it too late to start {x} at 30?", "Can I begin {x} at the age of 30?",
        "Am I too old to start learning {x} at 30?"]),
    "visit_city": (CITIES, [
        "What are the best places to visit in {x}?", "Which places should I see in {x}?",
        "What are the must-see attractions in {x}?",
        "In {x}, what are the top sights for tourists?",
        "What should a tourist visit in {x}?"]),
    "live_city": (CITIES, [
        "What is it like to live in {x}?", "How is life in {x}?",
        "Is {x} a good city to live in?", "What are the pros and cons of living in {x}?"]),
    "become_job": (JOBS, [
        "How do I become a {x}?", "What does it take to become a {x}?",
        "What are the steps to becoming a {x}?", "How can I get a job as a {x}?",
        "What should I study to be a {x}?"]),
    "salary_job": (JOBS, [
        "How much does a {x} earn?", "What is the average salary of a {x}?",
        "How much money do {x}s make per year?", "What is a typical {x} salary?"]),
}
# Intents over the same slot list: a slot kept with the intent changed is a hard negative.
SIBLINGS = {"learn_lang": "install_lang", "install_lang": "learn_lang",
            "learn_skill": "start_skill", "start_skill": "learn_skill",
            "visit_city": "live_city", "live_city": "visit_city",
            "become_job": "salary_job", "salary_job": "become_job"}


def _surface(template, x, rng):
    """Fill a template with light noise: casing and the final question mark vary."""
    q = template.format(x=x)
    q = q[0].upper() + q[1:]
    if rng.random() < 0.2:
        q = q.lower()
    if rng.random() < 0.1:
        q = q.rstrip("?")
    return q


def make_pairs(n_pairs, seed=0, duplicate_fraction=0.5):
    """Rows (id, qid1, qid2, question1, question2, is_duplicate), deterministic per seed."""
    rng = random.Random(seed)
    qids, rows = {}, []
    names = sorted(INTENTS)
    for i in range(n_pairs):
        intent = rng.choice(names)
        slots, templates = INTENTS[intent]
        x = rng.choice(slots)
        t1, t2 = rng.sample(range(len(templates)), 2)
        q1 = _surface(templates[t1], x, rng)
        if rng.random() < duplicate_fraction:
            q2, label = _surface(templates[t2], x, rng), 1
        elif rng.random() < 0.6:  # same wording family, different key slot
            y = rng.choice([s for s in slots if s != x])
            t = t1 if rng.random() < 0.5 else t2
            q2, label = _surface(templates[t], y, rng), 0
        else:  # same slot, different intent
            other = INTENTS[SIBLINGS[intent]][1]
            q2, label = _surface(rng.choice(other), x, rng), 0
        a = qids.setdefault(q1, len(qids) + 1)
        b = qids.setdefault(q2, len(qids) + 1)
        rows.append((i, a, b, q1, q2, label))
    return rows


def write_pairs(path, n_pairs, seed=0, duplicate_fraction=0.5):
    """Write make_pairs(...) as CSV (.csv) or TSV (anything else) with the Quora header."""
    delimiter = "," if os.fspath(path).endswith(".csv") else "\t"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        w.writerow(["id", "qid1", "qid2", "question1", "question2", "is_duplicate"])
        w.writerows(make_pairs(n_pairs, seed, duplicate_fraction))
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--pairs", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duplicate-fraction", type=float, default=0.5)
    a = p.parse_args()
    write_pairs(a.out, a.pairs, a.seed, a.duplicate_fraction)


if __name__ == "__main__":
    main()
