# `make demo`: synthetic faces made on the spot (300 identities x 48 images in insightface's
# layout, and 600 pairs of 50 held-out identities), about 7 minutes on a 2-core laptop CPU.
# 32x32 images (the backbone and loss are the original's; only the resolution is small) and
# ArcFace with s=32, m=0.3, which converges faster from scratch than s=64, m=0.5. No dropout,
# and many images per identity rather than thousands of identities with few images: on a
# budget of a few epochs, class centres that see many images settle early and give the
# backbone a useful signal sooner. Overrides: DEMO_* (tools/recipe.sh), DEMO_IDENTITIES,
# DEMO_IMAGES_PER_IDENTITY.
DATA=datasets/synthetic_demo
VAL=lfw
OUT=output/demo
STEPS=650
VALIDATE=325
BATCH=64
LR_DECAY_AT="0.69"   # step 448 of 650
SYNTHETIC=(--image_size 32,32 --num_identities "${DEMO_IDENTITIES:-300}"
           --images_per_identity "${DEMO_IMAGES_PER_IDENTITY:-48}"
           --num_val_identities 50 --num_val_pairs 600 --seed 0)
NET=(--net_depth 18 --image_size 32,32)
TRAIN=(--keep_prob 1.0 --lr_values 0.1,0.01 --warmup_steps 50 --margin_s 32 --margin_m 0.3
       --show_info_interval 50 --summary_interval 50)
