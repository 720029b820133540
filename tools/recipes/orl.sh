# `make train-orl`: real faces, the AT&T/ORL database (docs/data.md): 30 identities x 10
# images to train on, orl_val.bin (450 pairs of 5 other identities) to validate on; about
# 5 minutes on 2 CPU cores. The 112x112 images are shrunk to 56x56 before the network
# (--net_input_size): four times faster per step than 112x112, and as accurate on ORL.
# With 10 images of each of only 30 people, augmentation (flip, crop, colour, random
# erasing) and a weight decay of 5e-3 keep the network from memorising them.
DATA=../shared/data/orl_faces
VAL=orl_val
OUT=output/orl
STEPS=280
VALIDATE=20
LR_DECAY_AT="0.5 0.75"
GET='get the AT&T/ORL faces and build them as docs/data.md says, then set ORL_DATA (and ORL_VAL_DB)'
NET=(--net_depth 18 --net_input_size 56,56)
TRAIN=(--augment True --random_erase 0.5 --lr_values 0.1,0.01,0.001 --warmup_steps 30
       --margin_s 32 --margin_m 0.3 --weight_decay 5e-3 --buffer_size 300
       --show_info_interval 10 --summary_interval 10)
