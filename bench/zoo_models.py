"""The model builders of ``bench/zoo.py``: small configurations of real models, one a function.

Each builder runs in a probe subprocess, after the package (the original or its rewritten
mirror) is importable, and returns the model and the positional and keyword arguments of one
forward call. ``@zoo(package, head)`` registers it; ``head`` is the classifier (or output) layer
as a spec selector, ``Class.attr.path``, whose ``weight`` the head-only spec makes random.
Configurations are tiny (a few channels, 16- or 32-pixel inputs) so a model builds, runs and
takes an SVI step in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ZooModel:
    package: str
    name: str
    build: Callable[[], tuple]
    #: ``Class.path.to.layer``: the class whose ``__init__`` holds the head, and its path.
    head: str

    @property
    def head_path(self) -> str:
        """The head's module path in a built model (the selector without its class)."""
        return self.head.partition(".")[2]


MODELS: list[ZooModel] = []


def zoo(package: str, head: str):
    def register(build: Callable[[], tuple]) -> Callable[[], tuple]:
        MODELS.append(ZooModel(package, build.__name__.removeprefix(f"{package}_"), build, head))
        return build

    return register


def image(channels: int = 1, size: int = 32, batch: int = 2, depth: int = 0):
    import torch

    shape = (batch, channels, size, size) + ((depth,) if depth else ())
    return torch.randn(*shape)


# -- monai: medical imaging networks (2-D configurations) ---------------------------------------


@zoo("monai", "DenseNet.class_layers.out")
def monai_densenet121():
    from monai.networks.nets import DenseNet121

    return (
        DenseNet121(spatial_dims=2, in_channels=1, out_channels=3, init_features=8, growth_rate=4),
        (image(),),
        {},
    )


@zoo("monai", "DenseNet.class_layers.out")
def monai_densenet169():
    from monai.networks.nets import DenseNet169

    return (
        DenseNet169(spatial_dims=2, in_channels=1, out_channels=3, init_features=8, growth_rate=4),
        (image(),),
        {},
    )


@zoo("monai", "DenseNet.class_layers.out")
def monai_densenet201():
    from monai.networks.nets import DenseNet201

    return (
        DenseNet201(spatial_dims=2, in_channels=1, out_channels=3, init_features=8, growth_rate=4),
        (image(),),
        {},
    )


@zoo("monai", "DenseNet.class_layers.out")
def monai_densenet_small():
    from monai.networks.nets import DenseNet

    net = DenseNet(
        spatial_dims=2, in_channels=1, out_channels=2, init_features=8, growth_rate=4, block_config=(2, 2)
    )
    return net, (image(),), {}


def _monai_resnet(depth: str):
    from monai.networks import nets

    factory = getattr(nets, f"resnet{depth}")
    return factory(spatial_dims=2, n_input_channels=1, num_classes=3, widen_factor=0.125), (image(),), {}


@zoo("monai", "ResNet.fc")
def monai_resnet10():
    return _monai_resnet("10")


@zoo("monai", "ResNet.fc")
def monai_resnet18():
    return _monai_resnet("18")


@zoo("monai", "ResNet.fc")
def monai_resnet34():
    return _monai_resnet("34")


@zoo("monai", "ResNet.fc")
def monai_resnet50():
    return _monai_resnet("50")


@zoo("monai", "ResNet.fc")
def monai_resnet101():
    return _monai_resnet("101")


def _monai_efficientnet(variant: str):
    from monai.networks.nets import EfficientNetBN

    net = EfficientNetBN(variant, pretrained=False, spatial_dims=2, in_channels=1, num_classes=3)
    return net, (image(size=32),), {}


@zoo("monai", "EfficientNet._fc")
def monai_efficientnet_b0():
    return _monai_efficientnet("efficientnet-b0")


@zoo("monai", "EfficientNet._fc")
def monai_efficientnet_b1():
    return _monai_efficientnet("efficientnet-b1")


@zoo("monai", "EfficientNet._fc")
def monai_efficientnet_b2():
    return _monai_efficientnet("efficientnet-b2")


def _monai_senet(name: str):
    from monai.networks import nets

    return getattr(nets, name)(spatial_dims=2, in_channels=1, num_classes=3), (image(size=32),), {}


@zoo("monai", "SENet.last_linear")
def monai_seresnet50():
    return _monai_senet("SEResNet50")


@zoo("monai", "SENet.last_linear")
def monai_seresnext50():
    return _monai_senet("SEResNext50")


@zoo("monai", "SENet.last_linear")
def monai_senet_small():
    from monai.networks.blocks.squeeze_and_excitation import SEResNetBottleneck
    from monai.networks.nets import SENet

    net = SENet(
        spatial_dims=2,
        in_channels=1,
        block=SEResNetBottleneck,
        layers=(1, 1, 1, 1),
        groups=1,
        reduction=4,
        inplanes=16,
        downsample_kernel_size=1,
        input_3x3=False,
        num_classes=3,
    )
    return net, (image(),), {}


@zoo("monai", "ViT.classification_head.0")
def monai_vit_classifier():
    from monai.networks.nets import ViT

    net = ViT(
        in_channels=1,
        img_size=16,
        patch_size=4,
        hidden_size=32,
        mlp_dim=64,
        num_layers=2,
        num_heads=4,
        classification=True,
        num_classes=3,
        spatial_dims=2,
    )
    return net, (image(size=16),), {}


@zoo("monai", "ViT.blocks.1.mlp.linear2")
def monai_vit_features():
    from monai.networks.nets import ViT

    net = ViT(
        in_channels=1,
        img_size=16,
        patch_size=4,
        hidden_size=32,
        mlp_dim=64,
        num_layers=2,
        num_heads=4,
        spatial_dims=2,
        proj_type="perceptron",
    )
    return net, (image(size=16),), {}


@zoo("monai", "ViTAutoEnc.conv3d_transpose_1")
def monai_vitautoenc():
    from monai.networks.nets import ViTAutoEnc

    net = ViTAutoEnc(
        in_channels=1,
        img_size=16,
        patch_size=4,
        hidden_size=32,
        mlp_dim=64,
        num_layers=2,
        num_heads=4,
        spatial_dims=2,
        deconv_chns=4,
    )
    return net, (image(size=16),), {}


@zoo("monai", "Regressor.final.1")
def monai_classifier():
    from monai.networks.nets import Classifier

    return Classifier(in_shape=(1, 16, 16), classes=3, channels=(4, 8), strides=(2, 2)), (image(size=16),), {}


@zoo("monai", "Regressor.final.1")
def monai_regressor():
    from monai.networks.nets import Regressor

    return (
        Regressor(in_shape=(1, 16, 16), out_shape=(2,), channels=(4, 8), strides=(2, 2)),
        (image(size=16),),
        {},
    )


@zoo("monai", "Regressor.final.1")
def monai_discriminator():
    from monai.networks.nets import Discriminator

    return Discriminator(in_shape=(1, 16, 16), channels=(4, 8), strides=(2, 2)), (image(size=16),), {}


@zoo("monai", "Generator.linear")
def monai_generator():
    import torch
    from monai.networks.nets import Generator

    net = Generator(latent_shape=(8,), start_shape=(4, 4, 4), channels=(4, 1), strides=(2, 2))
    return net, (torch.randn(2, 8),), {}


@zoo("monai", "FullyConnectedNet.output")
def monai_fully_connected():
    import torch
    from monai.networks.nets import FullyConnectedNet

    return FullyConnectedNet(in_channels=6, out_channels=2, hidden_channels=(8, 8)), (torch.randn(4, 6),), {}


@zoo("monai", "VarFullyConnectedNet.decode.final")
def monai_var_fully_connected():
    import torch
    from monai.networks.nets import VarFullyConnectedNet

    net = VarFullyConnectedNet(
        in_channels=6, out_channels=6, latent_size=3, encode_channels=(8,), decode_channels=(8,)
    )
    return net, (torch.randn(4, 6),), {}


@zoo("monai", "UNet.model.2.0.conv")
def monai_unet():
    from monai.networks.nets import UNet

    net = UNet(
        spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1
    )
    return net, (image(size=16),), {}


@zoo("monai", "BasicUNet.final_conv")
def monai_basic_unet():
    from monai.networks.nets import BasicUNet

    return (
        BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4)),
        (image(size=32),),
        {},
    )


@zoo("monai", "BasicUNetPlusPlus.final_conv_0_4")
def monai_basic_unet_plus_plus():
    from monai.networks.nets import BasicUNetPlusPlus

    net = BasicUNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    return net, (image(size=32),), {}


@zoo("monai", "AttentionUnet.model.2.conv")
def monai_attention_unet():
    from monai.networks.nets import AttentionUnet

    net = AttentionUnet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2))
    return net, (image(size=16),), {}


@zoo("monai", "AutoEncoder.decode.decode_1.conv.conv")
def monai_autoencoder():
    from monai.networks.nets import AutoEncoder

    net = AutoEncoder(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8), strides=(2, 2))
    return net, (image(size=16),), {}


@zoo("monai", "VarAutoEncoder.mu")
def monai_var_autoencoder():
    from monai.networks.nets import VarAutoEncoder

    net = VarAutoEncoder(
        spatial_dims=2, in_shape=(1, 16, 16), out_channels=1, latent_size=4, channels=(4, 8), strides=(2, 2)
    )
    return net, (image(size=16),), {}


@zoo("monai", "DynUNet.output_block.conv.conv")
def monai_dynunet():
    from monai.networks.nets import DynUNet

    net = DynUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        kernel_size=(3, 3, 3),
        strides=(1, 2, 2),
        upsample_kernel_size=(2, 2),
        filters=(4, 8, 16),
    )
    return net, (image(size=16),), {}


@zoo("monai", "DynUNet.output_block.conv.conv")
def monai_dynunet_deep_supervision():
    from monai.networks.nets import DynUNet

    net = DynUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        kernel_size=(3, 3, 3, 3),
        strides=(1, 2, 2, 2),
        upsample_kernel_size=(2, 2, 2),
        filters=(4, 8, 16, 16),
        deep_supervision=True,
        deep_supr_num=1,
        res_block=True,
    )
    return net, (image(size=32),), {}


@zoo("monai", "SegResNet.conv_final.2.conv")
def monai_segresnet():
    from monai.networks.nets import SegResNet

    net = SegResNet(
        spatial_dims=2, init_filters=4, in_channels=1, out_channels=2, norm=("GROUP", {"num_groups": 2})
    )
    return net, (image(size=16),), {}


@zoo("monai", "SegResNetVAE.vae_fc1")
def monai_segresnet_vae():
    from monai.networks.nets import SegResNetVAE

    net = SegResNetVAE(
        input_image_size=(16, 16),
        spatial_dims=2,
        init_filters=4,
        in_channels=1,
        out_channels=2,
        norm=("GROUP", {"num_groups": 2}),
    )
    return net, (image(size=16),), {}


@zoo("monai", "SegResNetDS.up_layers.2.head")
def monai_segresnet_ds():
    from monai.networks.nets import SegResNetDS

    return SegResNetDS(spatial_dims=2, init_filters=4, in_channels=1, out_channels=2), (image(size=16),), {}


@zoo("monai", "HighResNet.blocks.5.conv")
def monai_highresnet():
    from monai.networks.nets import HighResNet

    net = HighResNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        layer_params=(
            {"name": "conv_0", "n_features": 4, "kernel_size": 3},
            {"name": "res_1", "n_features": 4, "kernels": (3, 3), "repeat": 1},
            {"name": "res_2", "n_features": 8, "kernels": (3, 3), "repeat": 1},
            {"name": "res_3", "n_features": 8, "kernels": (3, 3), "repeat": 1},
            {"name": "conv_1", "n_features": 8, "kernel_size": 1},
            {"name": "conv_2", "kernel_size": 1},
        ),
    )
    return net, (image(size=16),), {}


@zoo("monai", "VNet.out_tr.conv2")
def monai_vnet():
    from monai.networks.nets import VNet

    return VNet(spatial_dims=2, in_channels=1, out_channels=2), (image(size=32),), {}


@zoo("monai", "UNETR.out.conv.conv")
def monai_unetr():
    from monai.networks.nets import UNETR

    net = UNETR(
        in_channels=1,
        out_channels=2,
        img_size=(16, 16),
        feature_size=4,
        hidden_size=32,
        mlp_dim=64,
        num_heads=4,
        spatial_dims=2,
    )
    return net, (image(size=16),), {}


@zoo("monai", "SwinUNETR.out.conv.conv")
def monai_swin_unetr():
    from monai.networks.nets import SwinUNETR

    net = SwinUNETR(
        in_channels=1,
        out_channels=2,
        feature_size=12,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 1, 1),
        spatial_dims=2,
    )
    return net, (image(size=64, batch=1),), {}


@zoo("monai", "RegUNet.output_block.layers.0.conv")
def monai_regunet():
    from monai.networks.nets import RegUNet

    net = RegUNet(spatial_dims=2, in_channels=1, num_channel_initial=4, depth=2, out_channels=2)
    return net, (image(size=16),), {}


@zoo("monai", "LocalNet.output_block.layers.0.conv")
def monai_localnet():
    from monai.networks.nets import LocalNet

    net = LocalNet(spatial_dims=2, in_channels=1, num_channel_initial=4, extract_levels=(2,), out_channels=2)
    return net, (image(size=16),), {}


@zoo("monai", "GlobalNet.output_block.fc")
def monai_globalnet():
    from monai.networks.nets import GlobalNet

    net = GlobalNet(image_size=(16, 16), spatial_dims=2, in_channels=1, num_channel_initial=4, depth=2)
    return net, (image(size=16),), {}


@zoo("monai", "MedNeXt.out_0.conv_out")
def monai_mednext():
    from monai.networks.nets import MedNeXt

    net = MedNeXt(
        spatial_dims=2,
        init_filters=4,
        in_channels=1,
        out_channels=2,
        blocks_down=(1, 1, 1, 1),
        blocks_bottleneck=1,
        blocks_up=(1, 1, 1, 1),
    )
    return net, (image(size=16),), {}


@zoo("monai", "AutoencoderKL.quant_conv_mu.conv")
def monai_autoencoder_kl():
    from monai.networks.nets import AutoencoderKL

    net = AutoencoderKL(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(4, 4),
        latent_channels=2,
        num_res_blocks=(1, 1),
        norm_num_groups=2,
        attention_levels=(False, False),
    )
    return net, (image(size=16),), {}


@zoo("monai", "VQVAE.decoder.blocks.4.conv")
def monai_vqvae():
    from monai.networks.nets import VQVAE

    net = VQVAE(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(4, 8),
        num_res_channels=4,
        num_res_layers=1,
        downsample_parameters=((2, 4, 1, 1), (2, 4, 1, 1)),
        upsample_parameters=((2, 4, 1, 1, 0), (2, 4, 1, 1, 0)),
        num_embeddings=8,
        embedding_dim=4,
    )
    return net, (image(size=16),), {}


@zoo("monai", "PatchDiscriminator.final_conv.conv")
def monai_patch_discriminator():
    from monai.networks.nets import PatchDiscriminator

    net = PatchDiscriminator(spatial_dims=2, num_layers_d=2, channels=4, in_channels=1, out_channels=1)
    return net, (image(size=32),), {}


@zoo("monai", "DiffusionModelUNet.out.2.conv")
def monai_diffusion_unet():
    import torch
    from monai.networks.nets import DiffusionModelUNet

    net = DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 8),
        attention_levels=(False, True),
        num_res_blocks=1,
        num_head_channels=8,
        norm_num_groups=4,
    )
    return net, (image(size=16),), {"timesteps": torch.tensor([1, 2])}


@zoo("monai", "DecoderOnlyTransformer.to_logits")
def monai_decoder_only_transformer():
    import torch
    from monai.networks.nets import DecoderOnlyTransformer

    net = DecoderOnlyTransformer(
        num_tokens=10, max_seq_len=8, attn_layers_dim=16, attn_layers_depth=2, attn_layers_heads=2
    )
    return net, (torch.randint(0, 10, (2, 8)),), {}


@zoo("monai", "Quicknat.model.3.conv")
def monai_quicknat():
    from monai.networks.nets import Quicknat

    net = Quicknat(num_classes=2, num_channels=1, num_filters=4, se_block="None")
    return net, (image(size=32),), {}


@zoo("monai", "MaskedAutoEncoderViT.decoder_pred")
def monai_masked_autoencoder_vit():
    from monai.networks.nets import MaskedAutoEncoderViT

    net = MaskedAutoEncoderViT(
        in_channels=1,
        img_size=16,
        patch_size=4,
        hidden_size=32,
        mlp_dim=64,
        num_layers=2,
        num_heads=4,
        decoder_hidden_size=16,
        decoder_mlp_dim=32,
        decoder_num_layers=1,
        decoder_num_heads=2,
        spatial_dims=2,
    )
    return net, (image(size=16),), {}


# -- diffusers: diffusion models, their autoencoders and transformers ----------------------------


def _timestep():
    import torch

    return torch.tensor([10, 20])


@zoo("diffusers", "UNet2DModel.conv_out")
def diffusers_unet_2d():
    from diffusers import UNet2DModel

    net = UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
    )
    return net, (image(3, 16), _timestep()), {}


@zoo("diffusers", "UNet2DModel.conv_out")
def diffusers_unet_2d_class_conditional():
    import torch
    from diffusers import UNet2DModel

    net = UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        num_class_embeds=5,
        resnet_time_scale_shift="scale_shift",
    )
    return net, (image(3, 16), _timestep()), {"class_labels": torch.tensor([1, 3])}


@zoo("diffusers", "UNet2DConditionModel.conv_out")
def diffusers_unet_2d_condition():
    import torch
    from diffusers import UNet2DConditionModel

    net = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=12,
        norm_num_groups=4,
        attention_head_dim=4,
    )
    return net, (image(4, 16), _timestep(), torch.randn(2, 5, 12)), {}


@zoo("diffusers", "AutoencoderKL.decoder.conv_out")
def diffusers_autoencoder_kl():
    from diffusers import AutoencoderKL

    net = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    return net, (image(3, 16),), {}


@zoo("diffusers", "AsymmetricAutoencoderKL.decoder.conv_out")
def diffusers_asymmetric_autoencoder_kl():
    import torch
    from diffusers import AsymmetricAutoencoderKL

    net = AsymmetricAutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        down_block_out_channels=(8, 16),
        layers_per_down_block=1,
        up_block_types=("UpDecoderBlock2D",) * 2,
        up_block_out_channels=(8, 16),
        layers_per_up_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    return net, (image(3, 16),), {"mask": torch.ones(2, 1, 16, 16)}


@zoo("diffusers", "VQModel.decoder.conv_out")
def diffusers_vq_model():
    from diffusers import VQModel

    net = VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=3,
        norm_num_groups=4,
        num_vq_embeddings=16,
        vq_embed_dim=3,
        sample_size=16,
    )
    return net, (image(3, 16),), {}


@zoo("diffusers", "AutoencoderTiny.decoder.layers.6")
def diffusers_autoencoder_tiny():
    from diffusers import AutoencoderTiny

    net = AutoencoderTiny(
        in_channels=3,
        out_channels=3,
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    )
    return net, (image(3, 16),), {}


@zoo("diffusers", "AutoencoderKLTemporalDecoder.decoder.time_conv_out")
def diffusers_autoencoder_kl_temporal_decoder():
    from diffusers import AutoencoderKLTemporalDecoder

    net = AutoencoderKLTemporalDecoder(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        block_out_channels=(32, 32),
        latent_channels=4,
        layers_per_block=1,
    )
    return net, (image(3, 16),), {"num_frames": 2}


@zoo("diffusers", "Transformer2DModel.proj_out")
def diffusers_transformer_2d():
    from diffusers import Transformer2DModel

    net = Transformer2DModel(
        num_attention_heads=2, attention_head_dim=4, in_channels=8, num_layers=1, norm_num_groups=4
    )
    return net, (image(8, 8),), {}


@zoo("diffusers", "DiTTransformer2DModel.proj_out_2")
def diffusers_dit():
    import torch
    from diffusers import DiTTransformer2DModel

    net = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=4,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
    )
    return net, (image(4, 8), _timestep(), torch.tensor([1, 2])), {}


@zoo("diffusers", "PixArtTransformer2DModel.proj_out")
def diffusers_pixart():
    import torch
    from diffusers import PixArtTransformer2DModel

    net = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=4,
        in_channels=4,
        out_channels=8,
        num_layers=1,
        sample_size=8,
        patch_size=2,
        cross_attention_dim=8,
        caption_channels=6,
        use_additional_conditions=False,
    )
    return (
        net,
        (image(4, 8),),
        {
            "encoder_hidden_states": torch.randn(2, 3, 6),
            "timestep": _timestep(),
            "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
        },
    )


@zoo("diffusers", "PriorTransformer.proj_to_clip_embeddings")
def diffusers_prior_transformer():
    import torch
    from diffusers import PriorTransformer

    net = PriorTransformer(
        num_attention_heads=2,
        attention_head_dim=4,
        num_layers=1,
        embedding_dim=8,
        num_embeddings=3,
        additional_embeddings=4,
    )
    return (
        net,
        (torch.randn(2, 8), _timestep(), torch.randn(2, 8)),
        {"encoder_hidden_states": torch.randn(2, 3, 8), "attention_mask": torch.ones(2, 3)},
    )


@zoo("diffusers", "ControlNetModel.controlnet_mid_block")
def diffusers_controlnet():
    import torch
    from diffusers import ControlNetModel

    net = ControlNetModel(
        in_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        cross_attention_dim=12,
        norm_num_groups=4,
        attention_head_dim=4,
        conditioning_embedding_out_channels=(4, 8),
    )
    return net, (image(4, 16), _timestep(), torch.randn(2, 5, 12), image(3, 32)), {}


@zoo("diffusers", "SD3Transformer2DModel.proj_out")
def diffusers_sd3_transformer():
    import torch
    from diffusers import SD3Transformer2DModel

    net = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=4,
        num_attention_heads=2,
        joint_attention_dim=8,
        caption_projection_dim=8,
        pooled_projection_dim=6,
        out_channels=4,
        pos_embed_max_size=16,
    )
    return (
        net,
        (image(4, 8),),
        {
            "encoder_hidden_states": torch.randn(2, 3, 8),
            "pooled_projections": torch.randn(2, 6),
            "timestep": _timestep(),
        },
    )


@zoo("diffusers", "FluxTransformer2DModel.proj_out")
def diffusers_flux_transformer():
    import torch
    from diffusers import FluxTransformer2DModel

    net = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=8,
        pooled_projection_dim=6,
        axes_dims_rope=(2, 2, 4),
    )
    return (
        net,
        (torch.randn(2, 16, 4),),
        {
            "encoder_hidden_states": torch.randn(2, 3, 8),
            "pooled_projections": torch.randn(2, 6),
            "timestep": torch.tensor([0.5, 0.2]),
            "img_ids": torch.zeros(16, 3),
            "txt_ids": torch.zeros(3, 3),
        },
    )


@zoo("diffusers", "UVit2DModel.mlm_layer.conv2")
def diffusers_uvit_2d():
    import torch
    from diffusers import UVit2DModel

    net = UVit2DModel(
        hidden_size=16,
        use_bias=False,
        hidden_dropout=0.0,
        cond_embed_dim=8,
        micro_cond_encode_dim=2,
        micro_cond_embed_dim=10,
        encoder_hidden_size=8,
        vocab_size=12,
        codebook_size=8,
        in_channels=8,
        block_out_channels=8,
        num_res_blocks=1,
        downsample=True,
        upsample=True,
        block_num_heads=1,
        num_hidden_layers=1,
        num_attention_heads=1,
        attention_dropout=0.0,
        intermediate_size=16,
        layer_norm_eps=1e-6,
        ln_elementwise_affine=True,
        sample_size=4,
    )
    return (
        net,
        (torch.randint(0, 8, (2, 4, 4)), torch.randn(2, 3, 8), torch.randn(2, 8), torch.randn(2, 5)),
        {},
    )


@zoo("diffusers", "UNet3DConditionModel.conv_out")
def diffusers_unet_3d_condition():
    import torch
    from diffusers import UNet3DConditionModel

    net = UNet3DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=12,
        norm_num_groups=4,
        attention_head_dim=4,
    )
    return net, (torch.randn(2, 4, 2, 8, 8), _timestep(), torch.randn(2, 5, 12)), {}


@zoo("diffusers", "HunyuanDiT2DModel.proj_out")
def diffusers_hunyuan_dit():
    import torch
    from diffusers import HunyuanDiT2DModel

    net = HunyuanDiT2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        patch_size=2,
        num_layers=2,
        sample_size=8,
        hidden_size=16,
        cross_attention_dim=8,
        cross_attention_dim_t5=8,
        pooled_projection_dim=4,
        text_len=3,
        text_len_t5=3,
        use_style_cond_and_image_meta_size=False,
    )
    return (
        net,
        (image(4, 8), torch.tensor([10.0, 20.0])),
        {
            "encoder_hidden_states": torch.randn(2, 3, 8),
            "text_embedding_mask": torch.ones(2, 3),
            "encoder_hidden_states_t5": torch.randn(2, 3, 8),
            "text_embedding_mask_t5": torch.ones(2, 3),
            "image_meta_size": None,
            "style": None,
            "image_rotary_emb": (torch.ones(16, 8), torch.zeros(16, 8)),
        },
    )


@zoo("diffusers", "LatteTransformer3DModel.proj_out")
def diffusers_latte():
    import torch
    from diffusers import LatteTransformer3DModel

    net = LatteTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=4,
        in_channels=4,
        out_channels=8,
        num_layers=1,
        sample_size=8,
        patch_size=2,
        cross_attention_dim=8,
        caption_channels=6,
        video_length=2,
    )
    return (
        net,
        (torch.randn(2, 4, 2, 8, 8),),
        {
            "encoder_hidden_states": torch.randn(2, 3, 6),
            "timestep": _timestep(),
            "enable_temporal_attentions": True,
        },
    )


@zoo("diffusers", "CogVideoXTransformer3DModel.proj_out")
def diffusers_cogvideox():
    import torch
    from diffusers import CogVideoXTransformer3DModel

    net = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=4,
        text_embed_dim=8,
        num_layers=1,
        sample_width=8,
        sample_height=8,
        sample_frames=5,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=3,
    )
    return net, (torch.randn(2, 2, 4, 8, 8), torch.randn(2, 3, 8), _timestep()), {}


@zoo("diffusers", "AuraFlowTransformer2DModel.proj_out")
def diffusers_auraflow():
    import torch
    from diffusers import AuraFlowTransformer2DModel

    net = AuraFlowTransformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_mmdit_layers=1,
        num_single_dit_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=8,
        caption_projection_dim=16,
        out_channels=4,
        pos_embed_max_size=16,
    )
    return net, (image(4, 8),), {"encoder_hidden_states": torch.randn(2, 3, 8), "timestep": _timestep()}


@zoo("diffusers", "SanaTransformer2DModel.proj_out")
def diffusers_sana():
    import torch
    from diffusers import SanaTransformer2DModel

    net = SanaTransformer2DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=4,
        num_layers=1,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=6,
        mlp_ratio=2.0,
        sample_size=8,
        patch_size=1,
    )
    return net, (image(4, 8), torch.randn(2, 3, 6), _timestep()), {}


@zoo("diffusers", "StableAudioDiTModel.proj_out")
def diffusers_stable_audio_dit():
    import torch
    from diffusers import StableAudioDiTModel

    net = StableAudioDiTModel(
        sample_size=8,
        in_channels=4,
        num_layers=1,
        attention_head_dim=4,
        num_attention_heads=2,
        num_key_value_attention_heads=1,
        out_channels=4,
        cross_attention_dim=8,
        time_proj_dim=8,
        global_states_input_dim=8,
        cross_attention_input_dim=6,
    )
    return (
        net,
        (torch.randn(2, 4, 8), _timestep()),
        {
            "encoder_hidden_states": torch.randn(2, 3, 6),
            "global_hidden_states": torch.randn(2, 1, 8),
            "rotary_embedding": (torch.ones(9, 2), torch.zeros(9, 2)),
        },
    )


# -- torch_geometric: graph networks (models, and convolution layers used as models) -------------


def graph(nodes: int = 6, features: int = 8):
    """Node features and the edges of a ring, both ways."""
    import torch

    ring = torch.arange(nodes)
    edge_index = torch.stack([torch.cat([ring, (ring + 1) % nodes]), torch.cat([(ring + 1) % nodes, ring])])
    return torch.randn(nodes, features), edge_index


def _pyg_basic(name: str, **options):
    from torch_geometric.nn import models

    x, edge_index = graph()
    return (
        getattr(models, name)(in_channels=8, hidden_channels=8, num_layers=2, out_channels=3, **options),
        (x, edge_index),
        {},
    )


@zoo("torch_geometric", "BasicGNN.convs.1.lin")
def torch_geometric_gcn():
    return _pyg_basic("GCN")


@zoo("torch_geometric", "BasicGNN.convs.1.lin_l")
def torch_geometric_graph_sage():
    return _pyg_basic("GraphSAGE")


@zoo("torch_geometric", "BasicGNN.convs.1.nn.lins.1")
def torch_geometric_gin():
    return _pyg_basic("GIN")


@zoo("torch_geometric", "BasicGNN.convs.1.lin")
def torch_geometric_gat():
    return _pyg_basic("GAT", heads=2)


@zoo("torch_geometric", "BasicGNN.convs.1.lin_l")
def torch_geometric_gatv2():
    return _pyg_basic("GAT", v2=True, heads=2)


@zoo("torch_geometric", "BasicGNN.convs.1.nn.lins.1")
def torch_geometric_edge_cnn():
    return _pyg_basic("EdgeCNN")


@zoo("torch_geometric", "BasicGNN.lin")
def torch_geometric_gcn_jumping_knowledge():
    return _pyg_basic("GCN", jk="cat")


@zoo("torch_geometric", "BasicGNN.convs.1.lin")
def torch_geometric_pna():
    import torch

    return _pyg_basic("PNA", aggregators=["mean", "max"], scalers=["identity"], deg=torch.tensor([0, 0, 6]))


@zoo("torch_geometric", "MLP.lins.1")
def torch_geometric_mlp():
    import torch
    from torch_geometric.nn import MLP

    return MLP([8, 16, 3], norm="batch_norm"), (torch.randn(6, 8),), {}


@zoo("torch_geometric", "AttentiveFP.lin2")
def torch_geometric_attentive_fp():
    import torch
    from torch_geometric.nn import AttentiveFP

    x, edge_index = graph()
    net = AttentiveFP(
        in_channels=8, hidden_channels=8, out_channels=2, edge_dim=3, num_layers=2, num_timesteps=2
    )
    return net, (x, edge_index, torch.randn(edge_index.shape[1], 3), torch.zeros(6, dtype=torch.long)), {}


@zoo("torch_geometric", "GraphUNet.up_convs.1.lin")
def torch_geometric_graph_unet():
    from torch_geometric.nn import GraphUNet

    x, edge_index = graph()
    return GraphUNet(in_channels=8, hidden_channels=8, out_channels=3, depth=2), (x, edge_index), {}


@zoo("torch_geometric", "LINKX.final_mlp.lins.1")
def torch_geometric_linkx():
    from torch_geometric.nn import LINKX

    x, edge_index = graph()
    return (
        LINKX(num_nodes=6, in_channels=8, hidden_channels=8, out_channels=3, num_layers=2),
        (x, edge_index),
        {},
    )


@zoo("torch_geometric", "PMLP.lins.1")
def torch_geometric_pmlp():
    from torch_geometric.nn.models import PMLP

    x, edge_index = graph()
    return PMLP(in_channels=8, hidden_channels=8, out_channels=3, num_layers=2), (x, edge_index), {}


@zoo("torch_geometric", "RECT_L.lin")
def torch_geometric_rect():
    from torch_geometric.nn.models import RECT_L

    x, edge_index = graph()
    return RECT_L(in_channels=8, hidden_channels=8), (x, edge_index), {}


@zoo("torch_geometric", "NeuralFingerprint.lins.1")
def torch_geometric_neural_fingerprint():
    import torch
    from torch_geometric.nn.models import NeuralFingerprint

    x, edge_index = graph()
    net = NeuralFingerprint(in_channels=8, hidden_channels=8, out_channels=4, num_layers=2)
    return net, (x, edge_index, torch.zeros(6, dtype=torch.long)), {}


def _pyg_conv(name: str, *args, **options):
    from torch_geometric import nn as pyg

    x, edge_index = graph()
    return getattr(pyg, name)(*args, **options), (x, edge_index), {}


@zoo("torch_geometric", "GCNConv.lin")
def torch_geometric_gcn_conv():
    return _pyg_conv("GCNConv", 8, 4)


@zoo("torch_geometric", "SAGEConv.lin_l")
def torch_geometric_sage_conv():
    return _pyg_conv("SAGEConv", 8, 4)


@zoo("torch_geometric", "GATConv.lin")
def torch_geometric_gat_conv():
    return _pyg_conv("GATConv", 8, 4, heads=2)


@zoo("torch_geometric", "GATv2Conv.lin_l")
def torch_geometric_gatv2_conv():
    return _pyg_conv("GATv2Conv", 8, 4, heads=2)


@zoo("torch_geometric", "TransformerConv.lin_skip")
def torch_geometric_transformer_conv():
    return _pyg_conv("TransformerConv", 8, 4, heads=2)


@zoo("torch_geometric", "GraphConv.lin_rel")
def torch_geometric_graph_conv():
    return _pyg_conv("GraphConv", 8, 4)


@zoo("torch_geometric", "ChebConv.lins.1")
def torch_geometric_cheb_conv():
    return _pyg_conv("ChebConv", 8, 4, K=2)


@zoo("torch_geometric", "TAGConv.lins.1")
def torch_geometric_tag_conv():
    return _pyg_conv("TAGConv", 8, 4, K=2)


@zoo("torch_geometric", "SGConv.lin")
def torch_geometric_sg_conv():
    return _pyg_conv("SGConv", 8, 4, K=2)


@zoo("torch_geometric", "ResGatedGraphConv.lin_skip")
def torch_geometric_res_gated_graph_conv():
    return _pyg_conv("ResGatedGraphConv", 8, 4)


@zoo("torch_geometric", "LEConv.lin3")
def torch_geometric_le_conv():
    return _pyg_conv("LEConv", 8, 4)


@zoo("torch_geometric", "ClusterGCNConv.lin_out")
def torch_geometric_cluster_gcn_conv():
    return _pyg_conv("ClusterGCNConv", 8, 4)


@zoo("torch_geometric", "GENConv.mlp.4")
def torch_geometric_gen_conv():
    return _pyg_conv("GENConv", 8, 4)


@zoo("torch_geometric", "GINConv.nn.2")
def torch_geometric_gin_conv():
    from torch import nn

    return _pyg_conv("GINConv", nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)))


@zoo("torch_geometric", "FiLMConv.lins.0")
def torch_geometric_film_conv():
    return _pyg_conv("FiLMConv", 8, 4)


@zoo("torch_geometric", "GeneralConv.lin_msg")
def torch_geometric_general_conv():
    return _pyg_conv("GeneralConv", 8, 4)


@zoo("torch_geometric", "MFConv.lins_l.1")
def torch_geometric_mf_conv():
    return _pyg_conv("MFConv", 8, 4)


@zoo("torch_geometric", "SuperGATConv.lin")
def torch_geometric_super_gat_conv():
    return _pyg_conv("SuperGATConv", 8, 4, heads=2)


@zoo("torch_geometric", "EGConv.bases_lin")
def torch_geometric_eg_conv():
    return _pyg_conv("EGConv", 8, 8, num_heads=2, num_bases=2)


@zoo("torch_geometric", "FeaStConv.lin")
def torch_geometric_feast_conv():
    return _pyg_conv("FeaStConv", 8, 4, heads=2)


@zoo("torch_geometric", "MixHopConv.lins.1")
def torch_geometric_mixhop_conv():
    return _pyg_conv("MixHopConv", 8, 4)


# -- kornia: local-feature and vision networks (random initialisation, no weights downloaded) ----


def patches(batch: int = 2, size: int = 32):
    import torch

    return torch.rand(batch, 1, size, size)


@zoo("kornia", "HardNet.features.19")
def kornia_hardnet():
    from kornia.feature import HardNet

    return HardNet(pretrained=False), (patches(),), {}


@zoo("kornia", "HardNet8.features.22")
def kornia_hardnet8():
    from kornia.feature import HardNet8

    return HardNet8(pretrained=False), (patches(),), {}


@zoo("kornia", "SOSNet.layers.20")
def kornia_sosnet():
    from kornia.feature import SOSNet

    return SOSNet(pretrained=False), (patches(),), {}


@zoo("kornia", "TFeat.descr.0")
def kornia_tfeat():
    from kornia.feature import TFeat

    return TFeat(pretrained=False), (patches(),), {}


@zoo("kornia", "HyNet.layer7.1")
def kornia_hynet():
    from kornia.feature import HyNet

    return HyNet(pretrained=False), (patches(),), {}


@zoo("kornia", "OriNet.features.19")
def kornia_orinet():
    from kornia.feature import OriNet

    return OriNet(pretrained=False), (patches(),), {}


@zoo("kornia", "KeyNet.last_conv.0")
def kornia_keynet():
    from kornia.feature.keynet import KeyNet

    return KeyNet(pretrained=False), (patches(1, 32),), {}


@zoo("kornia", "XFeatModel.heatmap_head.2")
def kornia_xfeat():
    from kornia.feature import XFeatModel

    return XFeatModel(), (patches(2, 32),), {}


@zoo("kornia", "TinyViT.head")
def kornia_tiny_vit():
    import torch
    from kornia.contrib import TinyViT

    net = TinyViT(
        img_size=32,
        num_classes=3,
        embed_dims=(8, 16, 16, 16),
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 1, 1),
        window_sizes=(2, 2, 2, 1),
    )
    return net, (torch.randn(2, 3, 32, 32),), {}


@zoo("kornia", "RRDBNet.conv_last")
def kornia_rrdbnet():
    import torch
    from kornia.models import RRDBNet

    return RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=4), (torch.randn(1, 3, 8, 8),), {}
