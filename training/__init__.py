"""Training and what the entry points share: the training loop with its checkpoints and
validation (trainer) and how it stops (stopping), the checks of a resume
(checkpoint_utils), summaries, and the training tools' flags (cli_flags). May import
every layer below it: data/, verification, nets/, losses/, devices/, evaluation/."""
