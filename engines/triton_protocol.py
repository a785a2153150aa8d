"""The wire protocol of srpose's Triton ensembles: tensor names, types and model-config parameters, shared by the
server side (:mod:`srpose.serve`, which writes and runs the models) and the client
(:mod:`srpose.engines.triton_client`).

A client sends one image (its encoded file bytes) and, top-down, its person boxes; it gets people back:

======================  ============  =================================================================================
tensor                  type, dims    meaning
======================  ============  =================================================================================
``IMAGE``               UINT8 [-1]    the image file's bytes (JPEG, PNG, ...), decoded on the server as ``read_rgb``
``BOXES``               FP64 [-1, 5]  top-down: x, y, w, h (image pixels), detection score per person (float64, so
                                      the centre and scale come from a detection file's exact numbers)
``CENTER_SCALE``        FP64 [-1, 5]  top-down, instead of ``BOXES``: centre x, y, scale w, h (200-px units, padded as
                                      ``box_to_center_scale`` pads), score per person (e.g. MPII's annotated persons)
``KEYPOINTS``           FP32 [-1,K,3] x, y (image pixels) and score of every joint of every person
``SCORES``              FP32 [-1]     person score: top-down the evaluator's rescoring (box score x mean joint score
                                      above ``vis_thr``), bottom-up the grouping score
``CENTER_SCALE_OUT``    FP64 [4]      bottom-up: centre x, y and scale w, h of the image's test resize
======================  ============  =================================================================================

Every input is optional in the ensemble's config, so a request that lacks one reaches the pre-processing, which
answers with an error naming the input (Triton's own check of required ensemble inputs reports a "deadlock").
"""
from __future__ import annotations

__all__ = ["IMAGE", "BOXES", "CENTER_SCALE", "KEYPOINTS", "SCORES", "CENTER_SCALE_OUT", "CENTER", "SCALE",
           "BOX_SCORE", "INPUT_HW", "PARAM_ROLE", "PARAM_CARD", "PARAM_FLIP", "PARAM_MAX_PERSONS", "PARAM_INPUT",
           "PARAM_OUTPUTS", "PARAM_VERSION", "ROLES", "PROTOCOL_VERSION"]

IMAGE = "IMAGE"
BOXES = "BOXES"
CENTER_SCALE = "CENTER_SCALE"
KEYPOINTS = "KEYPOINTS"
SCORES = "SCORES"
CENTER_SCALE_OUT = "CENTER_SCALE_OUT"

# tensors between the ensemble's steps (pre-processing -> post-processing), not seen by clients
CENTER = "CENTER"
SCALE = "SCALE"
BOX_SCORE = "BOX_SCORE"
INPUT_HW = "INPUT_HW"

# model-config parameters (string values) of the models srpose writes
PARAM_ROLE = "srpose_role"              # ensemble | preprocess | network | postprocess
PARAM_CARD = "srpose_card"              # the artifact card (JSON) of the served graph
PARAM_FLIP = "srpose_server_flip"       # "1": the ensemble runs the mirrored pass itself (graph without flip)
PARAM_MAX_PERSONS = "srpose_max_persons"  # top-down: most boxes one request may carry
PARAM_INPUT = "srpose_input"            # the network's input tensor name
PARAM_OUTPUTS = "srpose_outputs"        # the network's output tensor names, comma separated
PARAM_VERSION = "srpose_protocol"       # PROTOCOL_VERSION of the models

ROLES = ("ensemble", "preprocess", "network", "postprocess")
PROTOCOL_VERSION = "1"
