# `make train-lfw`: faces in the wild, LFW (docs/data.md): 3,132 identities (6,051 images;
# most people have one image) to train on, lfw_dev.bin (fold 5 of LFW's pairs.txt: 600 pairs
# of 422 people who are not in the training set) to validate on; about 25 minutes on 2 CPU
# cores. Why these settings (docs/recipes.md): a scale-64 ArcFace head over thousands of
# barely-seen classes sends the backbone gradients large enough to wreck it in the first
# steps, so its gradients are clipped to norm 5 (as insightface's PyTorch trainer does) and
# the learning rate warms up over about one epoch; lr 0.1 with tenfold decays at 60% and
# 85%; weight decay 5e-4; flip only, no dropout.
DATA=../shared/data/lfw_faces
VAL=lfw_dev
OUT=output/lfw
STEPS=1700
VALIDATE=250
LR_DECAY_AT="0.6 0.85"
GET='get LFW and build it as docs/data.md says, then set LFW_DATA (and LFW_VAL_DB)'
NET=(--net_depth 18 --net_input_size 56,56)
TRAIN=(--lr_values 0.1,0.01,0.001 --warmup_steps 200 --clip_gradient_norm 5 --weight_decay 5e-4
       --margin_s 64 --margin_m 0.5 --keep_prob 1.0 --augment False --buffer_size 6100
       --show_info_interval 50 --summary_interval 250 --summary_histograms False)
