"""The rubric follows each task's intent on responses in a real model's style: words outside the
world's lexicon, paraphrases and padding cannot buy content."""

import pytest

from rlhf_jax.feedback.tasks import Task, rubric


def content(task: Task, response: str) -> float:
    return rubric(task, response)["content"]


GENERATION = Task("[ab] Write a happy line about the sea.", "generation",
                  "The sea is kind and calm.", ("sea",))


def test_generation_counts_unknown_adjectives_as_not_kind():
    assert content(GENERATION, "The sea is kind and calm.") == 1.0
    assert content(GENERATION, "The seas are very kind and calm.") == 1.0  # plural, intensifier
    # The old rubric scored these 1.0: `sad`, `serene`, `peaceful` are not in its lexicon.
    assert content(GENERATION, "The sea is sad and calm.") == pytest.approx(0.4 + 0.6 * 0.5)
    assert content(GENERATION, "The sea is serene and peaceful.") == pytest.approx(0.4)
    padded = "The sea is calm and gentle, a beautiful place where waves dance under the sun."
    assert content(GENERATION, padded) < 0.6
    assert content(GENERATION, "The sea is rude and grim.") == pytest.approx(0.4)


def test_place_answers_count_other_places_and_unknown_words_as_wrong():
    fox = Task("[cd] Where does a fox live?", "open_qa", "In the forest.", ("forest",))
    assert content(fox, "In the forest.") == 1.0
    assert content(fox, "A fox lives in the forest.") == 1.0  # the prompt's words, inflected
    assert content(fox, "Foxes live in forests.") == 1.0
    assert content(fox, "In the forest or the woods.") == pytest.approx(0.75)
    hedged = "Foxes typically live in forests, grasslands and deserts."
    assert content(fox, hedged) == pytest.approx(0.5 + 0.5 / 4)
    assert content(fox, "In the woods.") == 0.0  # a synonym is not the world's fact
    town = Task("[ef] Ana lives in Oslo. Where does Ana live?", "closed_qa", "In Oslo.", ("oslo",))
    assert content(town, "Ana lives in Oslo.") == 1.0
    assert content(town, "Ana lives in Oslo, Norway.") == pytest.approx(0.75)
    assert content(town, "In Oslo or Rome.") == pytest.approx(0.75)


def test_brainstorming_counts_unknown_words_as_wrong_items():
    fruits = Task("[gh] Name three fruits.", "brainstorming", "Apple, pear, plum.", ("fruits", "3"))
    assert content(fruits, "Apple, pear, plum.") == 1.0
    assert content(fruits, "Three fruits: apples, pears and plums.") == 1.0
    assert content(fruits, "Apple, banana, pear.") == pytest.approx(2 / 3 * 2 / 3)
    padded = "Apple, pear, plum, and many other delicious fruits."
    assert content(fruits, padded) == pytest.approx(3 / 6)  # many, other, delicious
    assert content(fruits, "Apple, cat, pear.") == pytest.approx(2 / 3 * 2 / 3)


def test_rewrite_and_summary_must_keep_to_the_prompts_words():
    rewrite = Task("[ij] Say in capitals: apple cat red", "rewrite", "APPLE CAT RED.",
                   ("APPLE", "CAT", "RED"))
    assert content(rewrite, "APPLE CAT RED.") == 1.0
    assert content(rewrite, "APPLE CAT RED BANANA.") == pytest.approx(0.75)
    assert content(rewrite, "Sure: APPLE CAT RED.") == pytest.approx(0.5 * 0.75)
    story = Task("[kl] Summarize: Ana has a cat. It is red and old.", "summarization",
                 "Ana has a red cat.", ("ana", "cat", "red"))
    assert content(story, "Ana has a red cat.") == 1.0
    assert content(story, "Ana has an old red cat.") == 1.0
    assert content(story, "Ana owns a lovely red cat.") == pytest.approx(3 / 5)
    assert content(story, "Ana has a red kitten.") == pytest.approx(2 / 3 * 0.5 * 3 / 4)


def test_negated_labels_and_spelled_numbers_follow_their_meaning():
    word = Task("[mn] Is 'rude' kind or unkind?", "classification", "It is unkind.", ("unkind",))
    assert content(word, "It is unkind.") == 1.0
    assert content(word, "The word 'rude' is unkind.") == 1.0
    assert content(word, "It is not kind.") == 0.0
    kind_word = Task("[mn] Is 'calm' kind or unkind?", "classification", "It is kind.", ("kind",))
    assert content(kind_word, "It is not unkind.") == 0.0
    assert content(kind_word, "It isn't unkind.") == 0.0
    count = Task("[op] How many? Bo saw 5 cats.", "extraction", "5.", ("5",))
    assert content(count, "5.") == content(count, "Bo saw five cats.") == 1.0
    assert content(count, "Bo saw 5 cats, or maybe 6.") == 0.0


def test_filler_and_rambling_cost_cleanliness_not_content():
    judged = rubric(GENERATION, "Well, I think the sea is kind and calm. That is all I know.")
    assert judged["content"] == 1.0 and judged["clean"] == 0.0
