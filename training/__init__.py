"""Training and what the entry points share: the training loop with its checkpoints and
validation (trainer) and how it stops (stopping), the checks of a resume
(checkpoint_utils), summaries, the training tools' flags, the verification sets a tool
scores and their log lines (verification_sets), and the evaluation reports (wrong pairs,
ROC plots). May import every layer below it: data/, verification, nets/, losses/,
devices/."""
