"""Short descriptions of the cell classes the demo can predict, for a reader who is not a cytologist.

Each class has what the cell is, what finding it corresponds to (with the Bethesda
System category where one applies) and a coarse risk level. The texts follow the
dataset papers (SIPaKMeD: Plissiti et al., ICIP 2018; Herlev: Jantzen et al., 2005)
and, for collections labelled in Bethesda categories (NILM, ASC-US, LSIL, ASC-H, HSIL, SCC),
the 2014 Bethesda System for reporting cervical cytology. They describe a class,
not a patient: one cell never makes a diagnosis.
"""
from __future__ import annotations

from dataclasses import dataclass

from xcyto.data import class_key

DISCLAIMER = (
    "Research use only. xcyto is not a medical device and this demo does not give a diagnosis: "
    "a classifier's answer about one cell is not a Pap test result. Cervical cytology is reported by "
    "a cytotechnologist or cytopathologist who reviews the whole slide together with the clinical history.")

#: Risk levels, from least to most concerning; the demo colours its panel by these.
RISK_LEVELS = ("normal", "benign", "low-grade", "high-grade", "unknown")


@dataclass(frozen=True)
class CellInfo:
    """What one class is (``description``), what it means (``significance``) and how worrying it is."""

    title: str
    description: str
    significance: str
    risk: str  # one of RISK_LEVELS
    risk_note: str


_SIPAKMED = {
    "Superficial-Intermediate": CellInfo(
        "Superficial and intermediate squamous cells",
        "Mature cells from the upper layers of the squamous epithelium that covers the ectocervix: large, flat, "
        "polygonal, with abundant thin cytoplasm (pink-orange in superficial cells, blue-green in intermediate "
        "cells) and a small nucleus, dense and pyknotic in superficial cells, finely granular in intermediate ones.",
        "The most common cells of a normal Pap smear.",
        "normal", "Normal (negative for intraepithelial lesion or malignancy)."),
    "Parabasal": CellInfo(
        "Parabasal squamous cells",
        "Immature squamous cells from the deepest layers of the epithelium: small, round or oval, with dense "
        "blue-green cytoplasm and a relatively large nucleus.",
        "Normal. They dominate smears from atrophic epithelium (after menopause, after childbirth, with low "
        "oestrogen). Their high nucleus-to-cytoplasm ratio can mimic a high-grade lesion (HSIL).",
        "normal", "Normal; a known mimic of high-grade lesions."),
    "Metaplastic": CellInfo(
        "Squamous metaplastic cells",
        "Cells of the transformation zone, where columnar epithelium is replaced by squamous epithelium: round "
        "to polygonal, with dense cytoplasm that may show vacuoles or tail-like processes, and a central nucleus.",
        "Benign. Their presence shows that the transformation zone, where most precancerous lesions start, was "
        "sampled. Immature metaplastic cells can resemble high-grade lesions.",
        "benign", "Benign (a normal reparative process)."),
    "Koilocytotic": CellInfo(
        "Koilocytes",
        "Mature squamous cells with a large, sharply outlined clear cavity around the nucleus (koilocytosis) and "
        "an enlarged, dark, often wrinkled nucleus; two nuclei are common.",
        "The cytopathic effect of human papillomavirus (HPV) infection; reported as a low-grade squamous "
        "intraepithelial lesion (LSIL). Most such infections clear by themselves, but follow-up (HPV testing, "
        "repeat cytology or colposcopy) follows the local guidelines.",
        "low-grade", "Abnormal, low grade (LSIL)."),
    "Dyskeratotic": CellInfo(
        "Dyskeratotic cells",
        "Squamous cells that keratinise prematurely, alone or in three-dimensional clusters: small, with bright "
        "orange (keratinised) cytoplasm and small, dense or degenerating nuclei.",
        "Abnormal. Dyskeratosis is seen with HPV infection, usually within a low-grade lesion (LSIL), but "
        "keratinising atypia can also accompany high-grade lesions and keratinising squamous carcinoma, so it "
        "always needs review.",
        "low-grade", "Abnormal (usually LSIL; can accompany higher-grade lesions)."),
}

_HERLEV = {
    "normal_superficiel": CellInfo(
        "Normal superficial squamous cell",
        "A mature squamous cell from the surface of the epithelium: large, flat and polygonal, with abundant "
        "cytoplasm and a small, dense (pyknotic) nucleus.",
        "Normal.", "normal", "Normal."),
    "normal_intermediate": CellInfo(
        "Normal intermediate squamous cell",
        "A squamous cell from the middle layers of the epithelium: large and flat, with abundant cytoplasm and "
        "a small round nucleus with fine chromatin. Its nucleus is the usual size reference for abnormal cells.",
        "Normal.", "normal", "Normal."),
    "normal_columnar": CellInfo(
        "Normal columnar (endocervical) cell",
        "A glandular cell of the endocervical canal: tall and columnar (honeycomb-like seen from above), with a "
        "nucleus at its base.",
        "Normal. Its presence shows that the endocervix and transformation zone were sampled.",
        "normal", "Normal."),
    "light_dysplastic": CellInfo(
        "Mild (light) dysplasia",
        "A squamous cell with mature cytoplasm and an enlarged nucleus (about three times an intermediate "
        "nucleus or more), somewhat darker, with an irregular outline.",
        "Corresponds to CIN 1, reported as a low-grade squamous intraepithelial lesion (LSIL); usually caused by "
        "HPV and often regresses. Managed with follow-up per local guidelines.",
        "low-grade", "Abnormal, low grade (LSIL / CIN 1)."),
    "moderate_dysplastic": CellInfo(
        "Moderate dysplasia",
        "A less mature squamous cell: less cytoplasm, so a higher nucleus-to-cytoplasm ratio, with a dark "
        "nucleus with coarse chromatin and an irregular outline.",
        "Corresponds to CIN 2, reported as a high-grade squamous intraepithelial lesion (HSIL): a precancerous "
        "lesion that is usually investigated by colposcopy and often treated.",
        "high-grade", "Abnormal, high grade (HSIL / CIN 2)."),
    "severe_dysplastic": CellInfo(
        "Severe dysplasia",
        "An immature squamous cell with scant cytoplasm, a large, dark nucleus with coarse chromatin and an "
        "irregular outline; the nucleus fills most of the cell.",
        "Corresponds to CIN 3, reported as HSIL: a precancerous lesion with a real risk of progressing to "
        "invasive cancer if untreated; investigated by colposcopy and treated.",
        "high-grade", "Abnormal, high grade (HSIL / CIN 3)."),
    "carcinoma_in_situ": CellInfo(
        "Squamous carcinoma in situ",
        "Cells like those of severe dysplasia, often in crowded sheets: very little cytoplasm, large dark nuclei "
        "with coarse, irregular chromatin.",
        "Carcinoma in situ: abnormal cells through the whole thickness of the epithelium, not yet invading "
        "beyond it (CIN 3, reported as HSIL). Needs prompt colposcopy and treatment.",
        "high-grade", "Abnormal, high grade (HSIL / CIN 3, carcinoma in situ)."),
}

_BINARY = {
    "normal": CellInfo(
        "Normal cell",
        "A cell the model places with the normal classes (for Herlev: superficial, intermediate or columnar cells).",
        "No sign of a squamous intraepithelial lesion in this cell.",
        "normal", "Normal."),
    "abnormal": CellInfo(
        "Abnormal cell",
        "A cell the model places with the dysplastic classes (for Herlev: mild, moderate or severe dysplasia, or "
        "carcinoma in situ).",
        "Possible squamous intraepithelial lesion (LSIL to HSIL). The two-class model cannot say which grade; "
        "a cytologist would review the slide.",
        "high-grade", "Abnormal (grade not resolved by a two-class model)."),
}

_BETHESDA = {
    "NILM": CellInfo(
        "Negative for intraepithelial lesion or malignancy (NILM)",
        "A squamous cell without the nuclear changes of a lesion: the usual cells of a normal Pap smear "
        "(superficial, intermediate, parabasal, metaplastic).",
        "No sign of a squamous intraepithelial lesion in this cell.",
        "normal", "Normal (NILM)."),
    "ASC-US": CellInfo(
        "Atypical squamous cells of undetermined significance (ASC-US)",
        "A mature squamous cell whose nucleus is somewhat enlarged (about 2.5 to 3 times a normal intermediate "
        "nucleus) or a little dark, with changes that suggest LSIL but fall short of it.",
        "Equivocal: usually followed by HPV testing or repeat cytology.",
        "low-grade", "Atypical, undetermined (ASC-US)."),
    "LSIL": CellInfo(
        "Low-grade squamous intraepithelial lesion (LSIL)",
        "A mature (superficial or intermediate) squamous cell with an enlarged, dark nucleus with an irregular "
        "outline, often with a perinuclear halo (koilocyte): the cell effect of HPV infection, CIN 1.",
        "Low-grade lesion; most regress on their own. Managed by follow-up or colposcopy.",
        "low-grade", "Abnormal, low grade (LSIL / CIN 1)."),
    "ASC-H": CellInfo(
        "Atypical squamous cells, cannot exclude HSIL (ASC-H)",
        "A small immature (metaplastic-sized) squamous cell with a high nuclear-to-cytoplasmic ratio, suggesting "
        "but not proving a high-grade lesion.",
        "Equivocal with a higher risk: referred for colposcopy.",
        "high-grade", "Atypical, high grade not excluded (ASC-H)."),
    "HSIL": CellInfo(
        "High-grade squamous intraepithelial lesion (HSIL)",
        "An immature squamous cell with little cytoplasm and a large, dark nucleus with coarse chromatin and an "
        "irregular outline: a high nuclear-to-cytoplasmic ratio, CIN 2 or 3.",
        "High-grade lesion: colposcopy and usually treatment.",
        "high-grade", "Abnormal, high grade (HSIL / CIN 2-3)."),
    "SCC": CellInfo(
        "Squamous cell carcinoma (SCC)",
        "Malignant squamous cells: marked variation in size and shape, bizarre (e.g. tadpole or fibre) cells, "
        "dense orange cytoplasm, dark irregular nuclei, prominent nucleoli, often a background of debris.",
        "Suggests invasive cancer: urgent referral.",
        "high-grade", "Malignant (squamous cell carcinoma)."),
}

_BETHESDA["AGC"] = CellInfo(
    "Atypical glandular cells (AGC)",
    "A glandular (endocervical or endometrial) cell with an enlarged, crowded or dark nucleus, beyond reactive "
    "change but short of adenocarcinoma in situ.",
    "A glandular abnormality: colposcopy with endocervical (and often endometrial) sampling.",
    "high-grade", "Atypical, glandular (AGC).")
#: The long Bethesda names, as some collections spell their classes.
_BETHESDA_LONG = {"negative for intraepithelial lesion": _BETHESDA["NILM"],
                  "negative for intraepithelial lesion or malignancy": _BETHESDA["NILM"],
                  "squamous cell carcinoma": _BETHESDA["SCC"]}

CELL_INFO: dict[str, CellInfo] = {**_SIPAKMED, **_HERLEV, **_BINARY, **_BETHESDA, **_BETHESDA_LONG}


def cell_info(class_name: str) -> CellInfo | None:
    """The description of ``class_name`` (case-insensitive; ``-``, ``_`` and spaces alike), or ``None``."""
    wanted = class_key(class_name)
    for name, info in CELL_INFO.items():
        if class_key(name) == wanted:
            return info
    return None


__all__ = ["CELL_INFO", "CellInfo", "DISCLAIMER", "RISK_LEVELS", "cell_info"]
