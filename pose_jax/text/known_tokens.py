"""CLIP token ids of the words FinePOSE's prompts use, recorded from CLIP's tokenizer.

So that the Human3.6M and MPI-INF-3DHP prompts need no vocabulary file: the
fixed segment words, the 15 Human3.6M action classes (written as the dataset
names them; CLIP lower-cases) and the action-agnostic word. Recorded with the
reference tokenizer (``clip.simple_tokenizer.SimpleTokenizer().encode``) by
``scripts/record_finepose_fixtures.py``; ids exclude the start (49406) and end
(49407) markers. Any other text needs the vocabulary (:mod:`pose_jax.text.clip_bpe`).
"""

KNOWN_TOKEN_IDS: dict[str, tuple[int, ...]] = {
    # fixed prompt segments (the reference's pre_text_information)
    "A person": (320, 2533),
    "speed": (4163,),
    "head": (1375,),
    "body": (1774,),
    "arm": (4793,),
    "leg": (4924,),
    # the action-agnostic word of label-free prompts (pose_jax's 'paper' mode)
    "unknown": (8685,),
    # Human3.6M action classes
    "Directions": (16440,),
    "Discussion": (5060,),
    "Eating": (4371,),
    "Greeting": (17754,),
    "Phoning": (745, 5197),
    "Photo": (1125,),
    "Posing": (10518,),
    "Purchases": (21887,),
    "Sitting": (4919,),
    "SittingDown": (42988, 653, 1136),
    "Smoking": (9038,),
    "Waiting": (2680,),
    "WalkDog": (8588, 1929),
    "Walking": (3941,),
    "WalkTogether": (8588, 1952),
}
