"""The final COVID-19 detector, by layer.

rule      the paper's decision on one probability map (COVID-19 when any pixel ≥ 0.5) and
          its severity; pure numpy
train     training the detector (a segmenter on COVID-19 cases and controls, balanced) and
          the Grad-CAM classifiers
evaluate  a trained detector or classifier on its test cases
ensemble  several trained detectors as one network: the mean of their probability maps
analyse   one CXR as the viewer and live inference show it: map, verdict, Grad-CAM
"""
