"""The body model behind our interface: topology, landmarks, skinning agree with Anny."""
import numpy as np
import pytest
import torch

from models.body.anny_body import CANONICAL_TO_ANNY, get_anny
from models.body.lbs import axis_angle_to_matrix, forward_kinematics
from models.fit.fit_body import posed_vertices
from models.render.skinning import forward_kinematics as np_fk


@pytest.fixture(scope="module")
def body():
    return get_anny()


def test_topology_is_consistent(body):
    top = body.topology
    assert top.faces.min() >= 0 and top.faces.max() < len(top.uvs)
    assert top.uvs.min() >= 0 and top.uvs.max() <= 1
    assert top.source_vertex.max() < len(body.template_vertices)
    assert np.allclose(top.skin_weights.sum(1), 1, atol=1e-4)
    assert all(p < i for i, p in enumerate(top.parents))
    assert set(CANONICAL_TO_ANNY.values()) <= set(top.joint_names)


def test_glTF_axes_person_is_upright_and_faces_plus_z(body):
    v = body.template_vertices.numpy()
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.4 < height < 2.0
    J = body.joint_names
    heads = body.template_heads.numpy()
    # The eyes are in front of the head joint, the left eye on +x.
    assert heads[J.index("eye.L"), 2] > heads[J.index("head"), 2]
    assert heads[J.index("eye.L"), 0] > 0 > heads[J.index("eye.R"), 0]


def test_zero_pose_is_rest_and_torch_numpy_skinning_agree(body):
    shape = np.full(6, 0.5, np.float32)
    J = len(body.joint_names)
    rest = posed_vertices(body, shape, np.zeros((J, 3), np.float32))
    with torch.no_grad():
        ref = body.rest_vertices(body.shape_coeffs(torch.as_tensor(shape)[None]))[0].numpy()
    assert np.abs(rest - ref).max() < 1e-5
    rng = np.random.default_rng(0)
    pose = rng.normal(0, 0.3, (J, 3)).astype(np.float32)
    heads = body.rest_heads(body.shape_coeffs(torch.as_tensor(shape)[None]))
    A_t = forward_kinematics(axis_angle_to_matrix(torch.as_tensor(pose)[None]), heads, body.parents)[0]
    from models.render.rotations import axis_angle

    A_n = np_fk(np.stack([axis_angle(p) for p in pose]), heads[0].numpy().astype(np.float64), np.array(body.parents))
    assert np.abs(A_t[:, :3, :].numpy() - A_n).max() < 1e-4


def test_landmarks_sit_on_the_body(body):
    lm = body.topology.landmarks
    for name in ("nose", "left_ear", "right_heel", "left_foot_index", "left_wrist", "right_hip"):
        assert name in lm
    v = body.template_vertices.numpy()
    nose = v[lm["nose"][1]]
    assert nose[2] == pytest.approx(v[np.abs(v[:, 0]) < 0.01][:, 2].max(), abs=0.05)
