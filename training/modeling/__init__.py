"""The model's modules, apart from the training loop (as segment-anything keeps ``modeling/``):
its configuration (:mod:`.config`), the SPT model (:mod:`.model`), the draft/refine decoder
(:mod:`.decoder`), the visual-relation-aware adapter (:mod:`.relation`), LoRA (:mod:`.lora`), the
box clip's region rule (:mod:`.box_region`) and the encoders beside SAM's ViT: the conv family
with its high-resolution features (:mod:`.conv_encoder`, :mod:`.high_res`), MobileSAM's TinyViT
(:mod:`.tinyvit_encoder`) and SAM 2.1's Hiera (:mod:`.hiera_encoder`)."""
